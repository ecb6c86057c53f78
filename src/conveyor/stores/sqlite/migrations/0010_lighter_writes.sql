-- conveyor schema (SQLite): less work in every write of a job's state.
--
-- Measured per job claimed and completed by a worker (callgrind, instructions in SQLite and
-- Python together), two things in the jobs table cost more than any index:
--
-- - Its CHECK constraints tested the state with IN lists. SQLite evaluates an IN list of
--   three or more values by building a temporary B-tree of them, and a CHECK is evaluated for
--   every row a statement writes: every insert and every change of state built two (about
--   9 % of a worker's instructions per job). The same tests written with OR build none;
--   what they accept is unchanged.
-- - The two dependency triggers ran AFTER UPDATE OF state, so every claim (pending ->
--   running) and every end of a job entered two trigger programs, each only to find its
--   WHEN false. They are one trigger now, AFTER UPDATE OF finished_at: a job reaches a
--   finished state only from an unfinished one (no transition leads from one finished
--   state to another), so only by a write that sets finished_at (the CHECK below demands
--   it), which a claim, a heartbeat or a pause never does. Its body is the two old ones,
--   each statement under the condition of the trigger it came from.
--
-- A CHECK cannot be changed in place: the jobs table is rebuilt, as in version 9 (the store
-- runs this migration with foreign keys off, so dropping the old table deletes nothing that
-- refers to it); every row keeps its seq and id.
DROP TRIGGER jobs_dependency_completed;
DROP TRIGGER jobs_dependency_failed;

CREATE TABLE jobs_new (
    seq                   INTEGER PRIMARY KEY,
    id                    TEXT    NOT NULL UNIQUE,
    job_type              TEXT    NOT NULL,
    queue                 TEXT    NOT NULL DEFAULT 'default',
    priority              INTEGER NOT NULL DEFAULT 0,
    state                 TEXT    NOT NULL DEFAULT 'pending'
        CHECK (state = 'pending' OR state = 'running' OR state = 'paused'
               OR state = 'completed' OR state = 'failed' OR state = 'cancelled'),
    params                TEXT    NOT NULL DEFAULT '{}',
    max_attempts          INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 0),
    attempt               INTEGER NOT NULL DEFAULT 0
        CHECK (attempt >= 0 AND attempt <= max_attempts),
    run_at                REAL    NOT NULL,
    timeout               REAL    CHECK (timeout IS NULL OR timeout > 0),
    pause_timeout         REAL    NOT NULL CHECK (pause_timeout > 0),
    backoff               TEXT    NOT NULL DEFAULT '{}',
    created_at            REAL    NOT NULL,
    updated_at            REAL    NOT NULL,
    started_at            REAL,
    finished_at           REAL,
    paused_at             REAL,
    current_step          INTEGER NOT NULL DEFAULT 0,
    total_steps           INTEGER NOT NULL DEFAULT 0,
    checkpoint            TEXT    NOT NULL DEFAULT '{}',
    result                TEXT,
    error                 TEXT,
    pause_requested       INTEGER NOT NULL DEFAULT 0 CHECK (pause_requested IN (0, 1)),
    cancel_requested      INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    resume_requested      INTEGER NOT NULL DEFAULT 0 CHECK (resume_requested IN (0, 1)),
    worker_id             TEXT,
    lease_token           TEXT,
    lease_expires_at      REAL,
    requeued_from         TEXT,
    line_at               REAL    NOT NULL DEFAULT 0,
    unique_key            TEXT,
    trace                 TEXT,
    limit_key             TEXT,
    waiting_on            INTEGER NOT NULL DEFAULT 0 CHECK (waiting_on >= 0),
    has_dependents        INTEGER NOT NULL DEFAULT 0 CHECK (has_dependents IN (0, 1)),
    on_dependency_failure TEXT    NOT NULL DEFAULT 'cancel'
        CHECK (on_dependency_failure IN ('cancel', 'run')),
    -- finished exactly when the job has stopped (completed, failed or cancelled)
    CHECK ((finished_at IS NOT NULL)
           = (state = 'completed' OR state = 'failed' OR state = 'cancelled')),
    -- a running job, and only a running job, is held under a lease
    CHECK ((lease_token IS NOT NULL) = (state = 'running')),
    CHECK ((lease_expires_at IS NOT NULL) = (state = 'running'))
);
INSERT INTO jobs_new (
    seq, id, job_type, queue, priority, state, params, max_attempts, attempt, run_at, timeout,
    pause_timeout, backoff, created_at, updated_at, started_at, finished_at, paused_at,
    current_step, total_steps, checkpoint, result, error, pause_requested, cancel_requested,
    resume_requested, worker_id, lease_token, lease_expires_at, requeued_from, line_at,
    unique_key, trace, limit_key, waiting_on, has_dependents, on_dependency_failure)
SELECT
    seq, id, job_type, queue, priority, state, params, max_attempts, attempt, run_at, timeout,
    pause_timeout, backoff, created_at, updated_at, started_at, finished_at, paused_at,
    current_step, total_steps, checkpoint, result, error, pause_requested, cancel_requested,
    resume_requested, worker_id, lease_token, lease_expires_at, requeued_from, line_at,
    unique_key, trace, limit_key, waiting_on, has_dependents, on_dependency_failure
FROM jobs ORDER BY seq;

DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;

-- The indexes of version 9, as they were.
CREATE INDEX jobs_pending_any   ON jobs (priority DESC, line_at, seq)
    WHERE state = 'pending' AND waiting_on = 0;
CREATE INDEX jobs_pending_queue ON jobs (queue, priority DESC, line_at, seq)
    WHERE state = 'pending' AND waiting_on = 0;
CREATE INDEX jobs_resumable     ON jobs (queue, paused_at) WHERE state = 'paused' AND resume_requested = 1;
CREATE INDEX jobs_lease         ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_paused        ON jobs (paused_at) WHERE state = 'paused' AND resume_requested = 0;
CREATE INDEX jobs_state_seq     ON jobs (state, seq);
CREATE INDEX jobs_type_seq      ON jobs (job_type, seq);
CREATE INDEX jobs_queue_seq     ON jobs (queue, seq);
CREATE INDEX jobs_queue_state   ON jobs (queue, state);
CREATE INDEX jobs_finished      ON jobs (state, finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_requeued_from ON jobs (requeued_from) WHERE requeued_from IS NOT NULL;
CREATE UNIQUE INDEX jobs_unique_key ON jobs (unique_key)
    WHERE unique_key IS NOT NULL
      AND (state IN ('pending', 'running', 'paused')
           OR (state = 'failed' AND attempt < max_attempts));

-- The dependency triggers of version 9 as one (see above). When a dependency completed, each
-- job waiting for it has one fewer to wait for. When it ended without completing (cancelled,
-- or failed with no retry left), a waiting job that asked to run anyway counts it as done;
-- the others are cancelled, naming it, with a history row each, and their own dependents
-- follow (recursive_triggers is on for every connection of the store). In the same
-- transaction as the change that ended it, whichever statement wrote it (one job or a batch).
CREATE TRIGGER jobs_dependency_ended AFTER UPDATE OF finished_at ON jobs
WHEN NEW.has_dependents = 1 AND OLD.state <> NEW.state
 AND (NEW.state = 'completed' OR NEW.state = 'cancelled'
      OR (NEW.state = 'failed' AND NEW.attempt >= NEW.max_attempts))
BEGIN
    UPDATE jobs SET waiting_on = waiting_on - 1, updated_at = NEW.updated_at
    WHERE state = 'pending' AND waiting_on > 0
      AND (NEW.state = 'completed' OR on_dependency_failure = 'run')
      AND id IN (SELECT job_id FROM job_dependencies WHERE depends_on = NEW.id);
    INSERT INTO job_history (job_seq, job_id, at, action, from_state, to_state, attempt, actor,
                             reason)
    SELECT seq, id, NEW.updated_at, 'cancel', 'pending', 'cancelled', attempt, 'conveyor',
           'dependency ' || NEW.id || CASE NEW.state WHEN 'cancelled' THEN ' was cancelled'
                                                     ELSE ' failed' END
    FROM jobs
    WHERE NEW.state <> 'completed' AND state = 'pending' AND waiting_on > 0
      AND on_dependency_failure = 'cancel'
      AND id IN (SELECT job_id FROM job_dependencies WHERE depends_on = NEW.id);
    UPDATE jobs SET state = 'cancelled', finished_at = NEW.updated_at,
                    updated_at = NEW.updated_at, pause_requested = 0, resume_requested = 0
    WHERE NEW.state <> 'completed' AND state = 'pending' AND waiting_on > 0
      AND on_dependency_failure = 'cancel'
      AND id IN (SELECT job_id FROM job_dependencies WHERE depends_on = NEW.id);
END;
