-- conveyor schema, version 1 (SQLite).
-- Times are REAL seconds since the Unix epoch (UTC). Booleans are 0/1.

CREATE TABLE jobs (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT    NOT NULL UNIQUE,
    job_type         TEXT    NOT NULL,
    queue            TEXT    NOT NULL DEFAULT 'default',
    priority         INTEGER NOT NULL DEFAULT 0,
    state            TEXT    NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'running', 'paused', 'completed', 'failed', 'cancelled')),
    params           TEXT    NOT NULL DEFAULT '{}',
    max_attempts     INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 0),
    attempt          INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0 AND attempt <= max_attempts),
    run_at           REAL    NOT NULL,
    timeout          REAL    CHECK (timeout IS NULL OR timeout > 0),
    pause_timeout    REAL    NOT NULL CHECK (pause_timeout > 0),
    backoff          TEXT    NOT NULL DEFAULT '{}',
    created_at       REAL    NOT NULL,
    updated_at       REAL    NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    paused_at        REAL,
    current_step     INTEGER NOT NULL DEFAULT 0,
    total_steps      INTEGER NOT NULL DEFAULT 0,
    checkpoint       TEXT    NOT NULL DEFAULT '{}',
    result           TEXT,
    error            TEXT,
    pause_requested  INTEGER NOT NULL DEFAULT 0 CHECK (pause_requested IN (0, 1)),
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    resume_requested INTEGER NOT NULL DEFAULT 0 CHECK (resume_requested IN (0, 1)),
    worker_id        TEXT,
    lease_token      TEXT,
    lease_expires_at REAL,
    requeued_from    TEXT,
    -- finished exactly when the job has stopped (completed, failed or cancelled)
    CHECK ((finished_at IS NOT NULL) = (state IN ('completed', 'failed', 'cancelled'))),
    -- a running job, and only a running job, is held under a lease
    CHECK ((lease_token IS NOT NULL) = (state = 'running')),
    CHECK ((lease_expires_at IS NOT NULL) = (state = 'running'))
);

-- Claims walk these partial indexes in claim order and stop at LIMIT: the cost of a claim
-- does not grow with the number of finished jobs in the table.
CREATE INDEX jobs_pending_any   ON jobs (priority DESC, run_at, seq) WHERE state = 'pending';
CREATE INDEX jobs_pending_queue ON jobs (queue, priority DESC, run_at, seq) WHERE state = 'pending';
CREATE INDEX jobs_resumable     ON jobs (queue, paused_at) WHERE state = 'paused' AND resume_requested = 1;
CREATE INDEX jobs_lease         ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_paused        ON jobs (paused_at) WHERE state = 'paused';
CREATE INDEX jobs_state_seq     ON jobs (state, seq);
CREATE INDEX jobs_type_seq      ON jobs (job_type, seq);
CREATE INDEX jobs_queue_seq     ON jobs (queue, seq);

CREATE TABLE job_history (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at         REAL    NOT NULL,
    action     TEXT    NOT NULL,
    from_state TEXT,
    to_state   TEXT    NOT NULL,
    attempt    INTEGER NOT NULL,
    actor      TEXT    NOT NULL DEFAULT '',
    reason     TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX job_history_job ON job_history (job_id, id);
