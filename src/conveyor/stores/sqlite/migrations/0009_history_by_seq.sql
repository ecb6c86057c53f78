-- conveyor schema (SQLite): fewer pages written by each commit.
--
-- Under WAL a commit writes every page it changed, so its cost is about the number of B-trees
-- (table and indexes) it touches and how scattered its rows are in each.
--
-- - The history of a job is keyed by the job's seq (the order jobs were enqueued in), not by
--   its id. The id is a random uuid4: each history row a commit wrote (a worker's
--   transaction writes one per job it completes or claims) landed on a leaf page of its own,
--   anywhere in job_history_job. By seq, the rows of jobs claimed or completed together share
--   the same few pages. The foreign key (and so the cascade that deletes a job's history with
--   the job) goes through job_seq, read from the same index; job_id stays in the row for
--   readers.
-- - Neither jobs nor job_history is AUTOINCREMENT any more: every insert updated the
--   sqlite_sequence table, one more page per commit. A new row now takes one more than the
--   largest seq (or id) in its table. It still sorts after every row kept, which is all that
--   is asked of them: claims break ties by seq among the jobs present, lists page by seq
--   from a job still present (list_before), a job's history is read in id order, and rows
--   referring to a deleted job (its history, its dependencies, its logs) are deleted with it
--   by the foreign keys' cascades, so a number used again never finds another job's rows.
--
-- The tables are rebuilt (the store runs this migration with foreign keys off, so dropping
-- the old jobs table deletes nothing that refers to it); every row keeps its seq and id.
DROP TRIGGER jobs_dependency_completed;
DROP TRIGGER jobs_dependency_failed;

CREATE TABLE jobs_new (
    seq                   INTEGER PRIMARY KEY,
    id                    TEXT    NOT NULL UNIQUE,
    job_type              TEXT    NOT NULL,
    queue                 TEXT    NOT NULL DEFAULT 'default',
    priority              INTEGER NOT NULL DEFAULT 0,
    state                 TEXT    NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'running', 'paused', 'completed', 'failed', 'cancelled')),
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
    CHECK ((finished_at IS NOT NULL) = (state IN ('completed', 'failed', 'cancelled'))),
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

CREATE TABLE job_history_new (
    id         INTEGER PRIMARY KEY,
    job_seq    INTEGER NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,
    job_id     TEXT    NOT NULL,
    at         REAL    NOT NULL,
    action     TEXT    NOT NULL,
    from_state TEXT,
    to_state   TEXT    NOT NULL,
    attempt    INTEGER NOT NULL,
    actor      TEXT    NOT NULL DEFAULT '',
    reason     TEXT    NOT NULL DEFAULT ''
);
-- (a history row whose job is gone can only have been written with foreign keys off: no
-- reader finds it, and it is not carried over)
INSERT INTO job_history_new (id, job_seq, job_id, at, action, from_state, to_state, attempt,
                             actor, reason)
SELECT h.id, j.seq, h.job_id, h.at, h.action, h.from_state, h.to_state, h.attempt, h.actor,
       h.reason
FROM job_history h JOIN jobs j ON j.id = h.job_id
ORDER BY h.id;

DROP TABLE job_history;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
ALTER TABLE job_history_new RENAME TO job_history;

-- The indexes of versions 1 to 8, as they were.
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

CREATE INDEX job_history_job ON job_history (job_seq, id);

-- The triggers of version 7, as they were, but for the seq of the history rows they write.
CREATE TRIGGER jobs_dependency_completed AFTER UPDATE OF state ON jobs
WHEN NEW.has_dependents = 1 AND OLD.state <> 'completed' AND NEW.state = 'completed'
BEGIN
    UPDATE jobs SET waiting_on = waiting_on - 1, updated_at = NEW.updated_at
    WHERE state = 'pending' AND waiting_on > 0
      AND id IN (SELECT job_id FROM job_dependencies WHERE depends_on = NEW.id);
END;

CREATE TRIGGER jobs_dependency_failed AFTER UPDATE OF state ON jobs
WHEN NEW.has_dependents = 1 AND OLD.state <> NEW.state
 AND (NEW.state = 'cancelled' OR (NEW.state = 'failed' AND NEW.attempt >= NEW.max_attempts))
BEGIN
    UPDATE jobs SET waiting_on = waiting_on - 1, updated_at = NEW.updated_at
    WHERE state = 'pending' AND waiting_on > 0 AND on_dependency_failure = 'run'
      AND id IN (SELECT job_id FROM job_dependencies WHERE depends_on = NEW.id);
    INSERT INTO job_history (job_seq, job_id, at, action, from_state, to_state, attempt, actor,
                             reason)
    SELECT seq, id, NEW.updated_at, 'cancel', 'pending', 'cancelled', attempt, 'conveyor',
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
