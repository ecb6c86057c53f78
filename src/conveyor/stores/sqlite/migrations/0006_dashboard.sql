-- conveyor schema (SQLite): what the dashboard's overview reads, kept fast with millions of
-- jobs.
--
-- jobs_finished: throughput per minute by outcome reads only the last hour's finished jobs
-- (a covering range scan), and the finish-time search filters use it too.
-- (counts per queue and state read jobs_queue_state, made by version 4.)
CREATE INDEX jobs_finished ON jobs (finished_at, state) WHERE finished_at IS NOT NULL;

-- Queue depth over time: one row per minute and queue, written by the first worker (or
-- dashboard) to look in that minute, kept for a day.
CREATE TABLE queue_depth (
    at      REAL    NOT NULL,
    queue   TEXT    NOT NULL,
    pending INTEGER NOT NULL,
    running INTEGER NOT NULL,
    PRIMARY KEY (at, queue)
);
