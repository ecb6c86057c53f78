-- conveyor schema (PostgreSQL): fewer index entries, no re-read row checks on job_history, and a
-- shorter WHEN on the dependency trigger, for each enqueue and each worker transaction.
--
-- Counted with callgrind in a single-user server running the prepared statements, one enqueue
-- cost the server about 708,000 instructions, after this migration about 575,000; a one-slot
-- worker's transaction (a completion and the next claim) 3.51 M, after it 3.02 M.
--
-- - The two CHECKs of job_history (from_state and to_state each one of the six states) cost
--   about 105,000 of them: PostgreSQL reads a table's CHECK expressions back from their stored
--   text and plans them again in every statement that writes the table (the text of these
--   two is 1.4 KB each), and every enqueue and every worker transaction writes history rows.
--   They guarded nothing the statements do not already: each history row's states are the
--   old and new state of the jobs row the same statement wrote (which jobs_row_valid checks),
--   the known constant of a claim's source, or NULL for a creation; a COPY batch's rows say
--   'pending', as the jobs they log.
-- - jobs_type_seq (job_type, seq) and jobs_queue_seq (queue, seq) served one read each, a
--   list of one type's or one queue's jobs, newest first, and cost an index entry in every
--   enqueue, and in every claim and completion (an update that changes an indexed column, as
--   a change of state does, writes a new entry in each index). Such a list walks jobs_seq_key
--   newest first and stops at its page, at once for a common type or queue; a queue's jobs in
--   some states are counted from jobs_queue_state. As SQLite's migration 0011 did.
-- - jobs_state_seq (state, seq) no longer holds pending jobs: an enqueue does not write it.
--   Pending jobs are the newest: their list walks jobs_seq_key newest first; the store's list
--   of other states says `state <> 'pending'`, so that a prepared statement's generic plan
--   may use this index.
-- - The dependency trigger (version 7) is called for a job with dependents only (WHEN
--   NEW.has_dependents); the rest of the test it had in its WHEN (the job has just ended for
--   good) is the function's first statement. A trigger's WHEN is read back from its stored text
--   and prepared in every statement that updates jobs, as a CHECK is: the long one cost about
--   80,000 instructions per claim or completion, while the function runs for the few jobs that
--   have dependents.
--
-- docs/dashboard.md says which lists walk the table and what they cost.
ALTER TABLE job_history
    DROP CONSTRAINT job_history_from_state_check,
    DROP CONSTRAINT job_history_to_state_check;
DROP INDEX jobs_type_seq;
DROP INDEX jobs_queue_seq;
DROP INDEX jobs_state_seq;
CREATE INDEX jobs_state_seq ON jobs (state, seq) WHERE state <> 'pending';

CREATE OR REPLACE FUNCTION conveyor_dependency_ended() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $body$
DECLARE
    ok boolean := NEW.state = 'completed';
    told bigint;
BEGIN
    -- what the trigger's WHEN said before version 12: the job has just ended for good
    IF NOT (OLD.state IS DISTINCT FROM NEW.state
            AND (NEW.state IN ('completed', 'cancelled')
                 OR (NEW.state = 'failed' AND NEW.attempt >= NEW.max_attempts))) THEN
        RETURN NULL;
    END IF;
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

DROP TRIGGER jobs_dependency_ended ON jobs;
CREATE TRIGGER jobs_dependency_ended AFTER UPDATE OF state ON jobs FOR EACH ROW
WHEN (NEW.has_dependents)
EXECUTE FUNCTION conveyor_dependency_ended();
