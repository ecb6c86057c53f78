-- conveyor schema (SQLite): job dependencies.
--
-- A job enqueued with depends_on has one job_dependencies row per dependency and counts the
-- ones not completed yet in waiting_on; claims skip it until that count is zero (the pending
-- indexes hold only jobs with nothing to wait for, so a claim never walks waiting jobs).
-- has_dependents marks a job some other job waits for: only such a job's end runs the
-- triggers below, so a job without dependents finishes at no extra cost.
ALTER TABLE jobs ADD COLUMN waiting_on INTEGER NOT NULL DEFAULT 0 CHECK (waiting_on >= 0);
ALTER TABLE jobs ADD COLUMN has_dependents INTEGER NOT NULL DEFAULT 0
    CHECK (has_dependents IN (0, 1));
ALTER TABLE jobs ADD COLUMN on_dependency_failure TEXT NOT NULL DEFAULT 'cancel'
    CHECK (on_dependency_failure IN ('cancel', 'run'));

CREATE TABLE job_dependencies (
    job_id     TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    depends_on TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (job_id, depends_on)
);
CREATE INDEX job_dependencies_upstream ON job_dependencies (depends_on, job_id);

DROP INDEX jobs_pending_any;
DROP INDEX jobs_pending_queue;
CREATE INDEX jobs_pending_any   ON jobs (priority DESC, line_at, seq)
    WHERE state = 'pending' AND waiting_on = 0;
CREATE INDEX jobs_pending_queue ON jobs (queue, priority DESC, line_at, seq)
    WHERE state = 'pending' AND waiting_on = 0;

-- A dependency completed: each job waiting for it has one fewer to wait for. In the same
-- transaction as the completion, whichever statement wrote it (one job or a batch).
CREATE TRIGGER jobs_dependency_completed AFTER UPDATE OF state ON jobs
WHEN NEW.has_dependents = 1 AND OLD.state <> 'completed' AND NEW.state = 'completed'
BEGIN
    UPDATE jobs SET waiting_on = waiting_on - 1, updated_at = NEW.updated_at
    WHERE state = 'pending' AND waiting_on > 0
      AND id IN (SELECT job_id FROM job_dependencies WHERE depends_on = NEW.id);
END;

-- A dependency ended without completing (cancelled, or failed with no retry left): a waiting
-- job that asked to run anyway counts it as done; the others are cancelled, naming it, with a
-- history row each. Their own dependents follow (recursive_triggers is on for every
-- connection of the store).
CREATE TRIGGER jobs_dependency_failed AFTER UPDATE OF state ON jobs
WHEN NEW.has_dependents = 1 AND OLD.state <> NEW.state
 AND (NEW.state = 'cancelled' OR (NEW.state = 'failed' AND NEW.attempt >= NEW.max_attempts))
BEGIN
    UPDATE jobs SET waiting_on = waiting_on - 1, updated_at = NEW.updated_at
    WHERE state = 'pending' AND waiting_on > 0 AND on_dependency_failure = 'run'
      AND id IN (SELECT job_id FROM job_dependencies WHERE depends_on = NEW.id);
    INSERT INTO job_history (job_id, at, action, from_state, to_state, attempt, actor, reason)
    SELECT id, NEW.updated_at, 'cancel', 'pending', 'cancelled', attempt, 'conveyor',
           'dependency ' || NEW.id || CASE NEW.state WHEN 'cancelled' THEN ' was cancelled'
                                                     ELSE ' failed' END
    FROM jobs
    WHERE state = 'pending' AND waiting_on > 0 AND on_dependency_failure = 'cancel'
      AND id IN (SELECT job_id FROM job_dependencies WHERE depends_on = NEW.id);
    UPDATE jobs SET state = 'cancelled', finished_at = NEW.updated_at,
                    updated_at = NEW.updated_at, pause_requested = 0, resume_requested = 0
    WHERE state = 'pending' AND waiting_on > 0 AND on_dependency_failure = 'cancel'
      AND id IN (SELECT job_id FROM job_dependencies WHERE depends_on = NEW.id);
END;
