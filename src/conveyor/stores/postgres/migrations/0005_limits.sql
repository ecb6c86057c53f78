-- conveyor schema (PostgreSQL): concurrency and rate limits checked at claim time.
--
-- limit_key: a job type's key template filled from the job's params at enqueue
-- ("tenant:7"); a per-key limit applies to each value.
ALTER TABLE jobs ADD COLUMN limit_key text;

-- The limits the claim obeys: a job type's (recorded by each worker as it starts, from its
-- code; key holds the type's limit_key template when the limit is per key) or a queue's
-- (set by an operator). rate_count claims at most in any rate_seconds.
CREATE TABLE flow_limits (
    scope        text             NOT NULL CHECK (scope IN ('type', 'queue')),
    name         text             NOT NULL,
    max_running  integer,
    rate_count   integer,
    rate_seconds double precision,
    key          text,
    changed_at   timestamptz      NOT NULL DEFAULT now(),
    actor        text             NOT NULL DEFAULT '',
    reason       text             NOT NULL DEFAULT '',
    PRIMARY KEY (scope, name)
);

-- One row per claim under a rate limit, for its sliding window (rows older than the
-- window are deleted by the next limited claim).
CREATE TABLE rate_claims (
    scope     text        NOT NULL,
    name      text        NOT NULL,
    limit_key text        NOT NULL,
    at        timestamptz NOT NULL
);
CREATE INDEX rate_claims_window ON rate_claims (scope, name, limit_key, at);
