-- What an API node shows of a job that the single node also shows (issue
-- #15): its estimate of seconds left, and its callback.
--
-- `eta_seconds`: written by the worker holding the job, from its own
-- registry's estimate (this machine's measured speed); shown while the job
-- is processing.
--
-- Callbacks of jobs queued through an API node: the record the
-- single node keeps on its job (`crate::callback::Callback` as JSON: url,
-- attempts, delivered_at, last_error, done), and when the next attempt may
-- be made. API nodes claim a due callback by moving `callback_due` ahead
-- (`FOR UPDATE SKIP LOCKED`: one node per attempt), then record how it went.

ALTER TABLE jobs ADD COLUMN eta_seconds double precision;
ALTER TABLE jobs ADD COLUMN callback jsonb;
ALTER TABLE jobs ADD COLUMN callback_due timestamptz;

-- Ended jobs whose callback is not done yet (few, whatever the history).
CREATE INDEX jobs_callbacks_pending ON jobs (callback_due)
    WHERE callback IS NOT NULL AND status IN ('completed', 'failed')
      AND NOT coalesce((callback->>'done')::boolean, false);
