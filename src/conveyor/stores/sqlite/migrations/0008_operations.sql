-- conveyor schema (SQLite): retention and the workers registry.
--
-- Retention deletes finished jobs oldest first, one state at a time, from jobs_finished
-- (version 6).
-- A job is kept while a copy requeued from it exists (the copy links back to it).
CREATE INDEX jobs_requeued_from ON jobs (requeued_from) WHERE requeued_from IS NOT NULL;

-- One row per worker process, written on start and on every heartbeat tick. A worker is gone
-- once expires_at (its last heartbeat plus its lease time) has passed; stopped_at is set when
-- it stops gracefully. stop_requested is an operator's request, read on the next heartbeat.
CREATE TABLE workers (
    id             TEXT    PRIMARY KEY,
    host           TEXT    NOT NULL,
    pid            INTEGER NOT NULL,
    queues         TEXT    NOT NULL DEFAULT '[]', -- a JSON array; empty: every queue
    concurrency    INTEGER NOT NULL CHECK (concurrency >= 1),
    version        TEXT    NOT NULL,
    started_at     REAL    NOT NULL,
    seen_at        REAL    NOT NULL,
    expires_at     REAL    NOT NULL,
    running        INTEGER NOT NULL DEFAULT 0 CHECK (running >= 0),
    stop_requested INTEGER NOT NULL DEFAULT 0 CHECK (stop_requested IN (0, 1)),
    stopped_at     REAL
);
