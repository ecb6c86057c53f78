-- conveyor schema (PostgreSQL): what the dashboard's overview reads, kept fast with millions
-- of jobs.
--
-- jobs_finished: finished jobs only, by state then finish time. Throughput per minute reads
-- one range of it per outcome (the last hour's), and retention deletes each state's oldest
-- jobs in its order, reading nothing else however many jobs the table holds.
-- (counts per queue and state read jobs_queue_state, made by version 4.)
CREATE INDEX jobs_finished ON jobs (state, finished_at) WHERE finished_at IS NOT NULL;

-- Queue depth over time: one row per minute and queue, written by the first worker (or
-- dashboard) to look in that minute, kept for a day.
CREATE TABLE queue_depth (
    at      timestamptz NOT NULL,
    queue   text        NOT NULL,
    pending bigint      NOT NULL,
    running bigint      NOT NULL,
    PRIMARY KEY (at, queue)
);
