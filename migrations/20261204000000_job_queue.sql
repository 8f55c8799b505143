-- The job queue (issue #15, `src/store/queue.rs`): jobs as rows, leases,
-- worker heartbeats, and the notifications workers and API nodes wait on.
--
-- Applied by `JobQueue::connect` (`sqlx::migrate!`, recorded in
-- `_sqlx_migrations` with a checksum). Never edit a migration once it has
-- shipped: add a new file with a later version.

CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    -- The API key's id that created the job; NULL without keys.
    owner            text,
    filename         text        NOT NULL,
    -- The uploaded audio in the blob store.
    audio_key        text        NOT NULL,
    -- Bytes uploaded (per-key storage quotas).
    bytes            bigint      NOT NULL DEFAULT 0 CHECK (bytes >= 0),
    -- What the upload asked of the pipeline (the registry's JobOptions, as JSON).
    options          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status           text        NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'processing', 'completed', 'failed', 'cancelled')),
    progress         smallint    NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    step             text        NOT NULL DEFAULT 'Queued',
    error            text,
    -- Whose fault a failure is (`input`, `internal`), as the registry writes it.
    error_kind       text,
    -- Seconds of audio, once decoded.
    duration         double precision,
    -- Leases taken (1 for a job that ran once; more after expired leases).
    attempts         integer     NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    -- The worker that holds (or last held) the job.
    lease_owner      text,
    -- A fresh id per lease: a worker whose lease was taken over still holds
    -- the old one, and every write it attempts matches no row.
    lease_token      uuid,
    lease_expires_at timestamptz,
    cancel_requested boolean     NOT NULL DEFAULT false,
    -- The stored result in the blob store, and its size.
    result_key       text,
    result_bytes     bigint,
    -- A job being processed holds a lease; no other status does.
    CHECK ((status = 'processing') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL))
);

-- Admission: the unfinished jobs in upload order (small, whatever the history).
CREATE INDEX jobs_active ON jobs (created_at, id) WHERE status IN ('queued', 'processing');
-- A key's jobs, newest first.
CREATE INDEX jobs_owner ON jobs (owner, created_at DESC);

-- Every node (API or worker) upserts its row now and then; `stats()` counts
-- the recent ones.
CREATE TABLE workers (
    id      text PRIMARY KEY,
    role    text        NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now()
);

-- Notifications, sent at commit whoever writes the row (the queue, or an
-- operator's SQL); the payload is the job's id. Listeners also poll: a
-- notification sent while a listener was reconnecting is lost.
--   colloquy_job_queued  a job became queued: a waiting worker leases it;
--   colloquy_job_cancel  cancellation was requested for a processing job,
--                        or one was deleted: its holder stops;
--   colloquy_job_updated status, progress or step changed (API nodes that
--                        follow a job live).
CREATE FUNCTION colloquy_jobs_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status = 'processing' THEN
            PERFORM pg_notify('colloquy_job_cancel', OLD.id::text);
        END IF;
        RETURN NULL;
    END IF;
    IF NEW.status = 'queued' AND (TG_OP = 'INSERT' OR OLD.status <> 'queued') THEN
        PERFORM pg_notify('colloquy_job_queued', NEW.id::text);
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NEW.cancel_requested AND NOT OLD.cancel_requested AND NEW.status = 'processing' THEN
            PERFORM pg_notify('colloquy_job_cancel', NEW.id::text);
        END IF;
        IF (NEW.status, NEW.progress, NEW.step) IS DISTINCT FROM (OLD.status, OLD.progress, OLD.step) THEN
            PERFORM pg_notify('colloquy_job_updated', NEW.id::text);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify AFTER INSERT OR UPDATE OR DELETE ON jobs
    FOR EACH ROW EXECUTE FUNCTION colloquy_jobs_notify();
