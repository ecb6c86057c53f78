-- conveyor schema, version 1 (PostgreSQL).
-- Runs inside the migration transaction with search_path set to the store's schema, so the
-- names below land in that schema. Times are timestamptz (stored as UTC instants).

CREATE TABLE jobs (
    id               text        PRIMARY KEY,
    -- insertion order: list_jobs pages by it, claims break ties with it
    seq              bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
    job_type         text        NOT NULL,
    queue            text        NOT NULL DEFAULT 'default',
    priority         integer     NOT NULL DEFAULT 0,
    state            text        NOT NULL DEFAULT 'pending'
        CONSTRAINT jobs_state_known
        CHECK (state IN ('pending', 'running', 'paused', 'completed', 'failed', 'cancelled')),
    params           jsonb       NOT NULL DEFAULT '{}'
        CONSTRAINT jobs_params_object CHECK (jsonb_typeof(params) = 'object'),
    max_attempts     integer     NOT NULL DEFAULT 3 CHECK (max_attempts >= 0),
    attempt          integer     NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    run_at           timestamptz NOT NULL DEFAULT now(),
    timeout          double precision CHECK (timeout IS NULL OR timeout > 0),
    pause_timeout    double precision NOT NULL DEFAULT 86400 CHECK (pause_timeout > 0),
    backoff          jsonb       NOT NULL DEFAULT '{}'
        CONSTRAINT jobs_backoff_object CHECK (jsonb_typeof(backoff) = 'object'),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    paused_at        timestamptz,
    -- bigint: a job may count bytes or rows, well past 2**31
    current_step     bigint      NOT NULL DEFAULT 0,
    total_steps      bigint      NOT NULL DEFAULT 0,
    checkpoint       jsonb       NOT NULL DEFAULT '{}'
        CONSTRAINT jobs_checkpoint_object CHECK (jsonb_typeof(checkpoint) = 'object'),
    result           jsonb,
    error            jsonb,
    pause_requested  boolean     NOT NULL DEFAULT false,
    cancel_requested boolean     NOT NULL DEFAULT false,
    resume_requested boolean     NOT NULL DEFAULT false,
    worker_id        text,
    lease_token      text,
    lease_expires_at timestamptz,
    requeued_from    text,
    -- retries never run past the budget fixed at creation
    CONSTRAINT jobs_attempt_within_budget CHECK (attempt <= max_attempts),
    -- finished exactly when the job has stopped (completed, failed or cancelled)
    CONSTRAINT jobs_finished_when_stopped
        CHECK ((finished_at IS NOT NULL) = (state IN ('completed', 'failed', 'cancelled'))),
    -- a running job, and only a running job, is held under a lease
    CONSTRAINT jobs_leased_when_running
        CHECK ((lease_token IS NOT NULL) = (state = 'running')),
    CONSTRAINT jobs_lease_expiry_when_running
        CHECK ((lease_expires_at IS NOT NULL) = (state = 'running'))
);

-- Claims walk these partial indexes in claim order and stop at LIMIT: a claim costs the same
-- however many finished jobs the table holds.
CREATE INDEX jobs_pending_any   ON jobs (priority DESC, run_at, seq) WHERE state = 'pending';
CREATE INDEX jobs_pending_queue ON jobs (queue, priority DESC, run_at, seq)
    WHERE state = 'pending';
CREATE INDEX jobs_resumable     ON jobs (queue, paused_at, seq)
    WHERE state = 'paused' AND resume_requested;
-- The reaper's two questions: whose lease ran out, whose pause went on too long.
CREATE INDEX jobs_lease         ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_paused        ON jobs (paused_at) WHERE state = 'paused';
-- Listing, newest first, by each filter.
CREATE INDEX jobs_state_seq     ON jobs (state, seq);
CREATE INDEX jobs_type_seq      ON jobs (job_type, seq);
CREATE INDEX jobs_queue_seq     ON jobs (queue, seq);

CREATE TABLE job_history (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     text        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at         timestamptz NOT NULL DEFAULT now(),
    action     text        NOT NULL,
    from_state text CHECK (from_state IN
        ('pending', 'running', 'paused', 'completed', 'failed', 'cancelled')),
    to_state   text        NOT NULL CHECK (to_state IN
        ('pending', 'running', 'paused', 'completed', 'failed', 'cancelled')),
    attempt    integer     NOT NULL,
    actor      text        NOT NULL DEFAULT '',
    reason     text        NOT NULL DEFAULT ''
);
CREATE INDEX job_history_job ON job_history (job_id, id);
