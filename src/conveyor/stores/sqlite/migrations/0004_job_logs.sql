-- conveyor schema (SQLite): job logs and the trace context a job was enqueued under.
--
-- What a job logged while it ran, per attempt: seq numbers the lines of one attempt (the
-- worker keeps only the last lines of each, deleting by seq), id orders every line of a job
-- and is the cursor a follower reads after. Deleting a job deletes its lines (foreign key).
CREATE TABLE job_logs (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    at      REAL    NOT NULL,
    level   TEXT    NOT NULL,
    message TEXT    NOT NULL,
    UNIQUE (job_id, attempt, seq)
);
CREATE INDEX job_logs_job ON job_logs (job_id, id);

-- The W3C traceparent of the span that enqueued the job (OpenTelemetry), or NULL.
ALTER TABLE jobs ADD COLUMN trace TEXT;

-- Counts by queue and state (the queues page, and /metrics at each scrape) read this index
-- alone, in its order, without touching the table's rows.
CREATE INDEX jobs_queue_state ON jobs (queue, state);
