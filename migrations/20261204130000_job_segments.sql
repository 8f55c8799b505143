-- Partial transcript segments of jobs in flight (issue #15): what the
-- worker holding a job has decoded so far, for API nodes' event streams
-- (`GET /api/jobs/{id}/events`), numbered in arrival order. Rows carry the
-- attempt that wrote them (a job leased again starts its text afresh) and
-- go when the job ends (the stored result replaces them) or is deleted.

CREATE TABLE job_segments (
    job_id  uuid    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    seq     integer NOT NULL,
    -- A `PartialSegment` as JSON: id, start, end, text.
    segment jsonb   NOT NULL,
    PRIMARY KEY (job_id, attempt, seq)
);

-- New segments wake whoever follows the job (one notification per
-- statement's job: PostgreSQL folds identical ones in a transaction).
CREATE FUNCTION colloquy_segments_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('colloquy_job_updated', NEW.job_id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER job_segments_notify AFTER INSERT ON job_segments
    FOR EACH ROW EXECUTE FUNCTION colloquy_segments_notify();
