-- conveyor schema (PostgreSQL): job dependencies.
--
-- A job enqueued with depends_on has one job_dependencies row per dependency and counts the
-- ones not completed yet in waiting_on; claims skip it until that count is zero (the pending
-- indexes hold only jobs with nothing to wait for, so a claim never walks waiting jobs).
-- has_dependents marks a job some other job waits for: only such a job's end runs the
-- trigger below, so a job without dependents finishes at no extra cost.
ALTER TABLE jobs ADD COLUMN waiting_on integer NOT NULL DEFAULT 0
    CONSTRAINT jobs_waiting_on_nonnegative CHECK (waiting_on >= 0);
ALTER TABLE jobs ADD COLUMN has_dependents boolean NOT NULL DEFAULT false;
ALTER TABLE jobs ADD COLUMN on_dependency_failure text NOT NULL DEFAULT 'cancel'
    CONSTRAINT jobs_on_dependency_failure_known
    CHECK (on_dependency_failure IN ('cancel', 'run'));

CREATE TABLE job_dependencies (
    job_id     text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    depends_on text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (job_id, depends_on)
);
CREATE INDEX job_dependencies_upstream ON job_dependencies (depends_on, job_id);

DROP INDEX jobs_pending_any;
DROP INDEX jobs_pending_queue;
CREATE INDEX jobs_pending_any   ON jobs (priority DESC, line_at, seq)
    WHERE state = 'pending' AND waiting_on = 0;
CREATE INDEX jobs_pending_queue ON jobs (queue, priority DESC, line_at, seq)
    WHERE state = 'pending' AND waiting_on = 0;

-- A dependency ended, in the same transaction as its end, whichever statement wrote it (one
-- job or a batch). Completed: each job waiting for it has one fewer to wait for. Cancelled,
-- or failed with no retry left: a waiting job that asked to run anyway counts it as done; the
-- others are cancelled, naming it, with a history row each (their own dependents follow, by
-- this trigger on them). Workers are woken and waiters told, as for any change. The enqueue of
-- a dependent locks its dependencies' rows first, so neither side can miss the other.
CREATE FUNCTION conveyor_dependency_ended() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $body$
DECLARE
    ok boolean := NEW.state = 'completed';
    told bigint;
BEGIN
    UPDATE jobs SET waiting_on = waiting_on - 1, updated_at = NEW.updated_at
    WHERE id IN (SELECT job_id FROM job_dependencies WHERE depends_on = NEW.id)
      AND state = 'pending' AND waiting_on > 0 AND (ok OR on_dependency_failure = 'run');
    IF NOT ok THEN
        WITH cancelled AS (
            UPDATE jobs SET state = 'cancelled', finished_at = NEW.updated_at,
                            updated_at = NEW.updated_at, pause_requested = false,
                            resume_requested = false
            WHERE id IN (SELECT job_id FROM job_dependencies WHERE depends_on = NEW.id)
              AND state = 'pending' AND waiting_on > 0 AND on_dependency_failure = 'cancel'
            RETURNING id, attempt
        ), logged AS (
            INSERT INTO job_history (job_id, at, action, from_state, to_state, attempt, actor,
                                     reason)
            SELECT id, NEW.updated_at, 'cancel', 'pending', 'cancelled', attempt, 'conveyor',
                   'dependency ' || NEW.id || CASE NEW.state WHEN 'cancelled'
                                                   THEN ' was cancelled' ELSE ' failed' END
            FROM cancelled
        )
        SELECT count(pg_notify('conveyor_' || TG_TABLE_SCHEMA || '_stop', id))
        INTO told FROM cancelled;
    END IF;
    PERFORM pg_notify('conveyor_' || TG_TABLE_SCHEMA || '_work', '');
    RETURN NULL;
END
$body$;

CREATE TRIGGER jobs_dependency_ended AFTER UPDATE OF state ON jobs FOR EACH ROW
WHEN (NEW.has_dependents AND OLD.state IS DISTINCT FROM NEW.state
      AND (NEW.state IN ('completed', 'cancelled')
           OR (NEW.state = 'failed' AND NEW.attempt >= NEW.max_attempts)))
EXECUTE FUNCTION conveyor_dependency_ended();
