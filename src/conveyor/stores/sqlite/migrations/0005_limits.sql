-- conveyor schema (SQLite): concurrency and rate limits checked at claim time.
--
-- limit_key: a job type's key template filled from the job's params at enqueue
-- ("tenant:7"); a per-key limit applies to each value.
ALTER TABLE jobs ADD COLUMN limit_key TEXT;

-- The limits the claim obeys: a job type's (recorded by each worker as it starts, from its
-- code; key holds the type's limit_key template when the limit is per key) or a queue's
-- (set by an operator). rate_count claims at most in any rate_seconds.
CREATE TABLE flow_limits (
    scope        TEXT    NOT NULL CHECK (scope IN ('type', 'queue')),
    name         TEXT    NOT NULL,
    max_running  INTEGER,
    rate_count   INTEGER,
    rate_seconds REAL,
    key          TEXT,
    changed_at   REAL    NOT NULL,
    actor        TEXT    NOT NULL DEFAULT '',
    reason       TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (scope, name)
);

-- One row per claim under a rate limit, for its sliding window (rows older than the
-- window are deleted by the next limited claim).
CREATE TABLE rate_claims (
    scope     TEXT NOT NULL,
    name      TEXT NOT NULL,
    limit_key TEXT NOT NULL,
    at        REAL NOT NULL
);
CREATE INDEX rate_claims_window ON rate_claims (scope, name, limit_key, at);
