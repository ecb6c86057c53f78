-- Named queries of the PostgreSQL store's search and dashboard overview.

-- name: count_jobs
-- where: the filters of list_jobs (statements.filter_terms)
SELECT count(*) AS n FROM jobs {where};

-- name: finished_per_minute
SELECT date_trunc('minute', finished_at) AS minute, state, count(*) AS n
FROM jobs
WHERE state IN ('completed', 'failed', 'cancelled')  -- one range of jobs_finished each
  AND finished_at IS NOT NULL AND finished_at >= %(since)s
GROUP BY minute, state ORDER BY minute;

-- name: record_depth
-- This minute's sample, once: the first transaction in a minute inserts it (a row for '' when
-- no job waits or runs), the others find it there and change nothing.
WITH minute AS (SELECT date_trunc('minute', now()) AS at),
fresh AS (
    SELECT queue, sum(pending) AS pending, sum(running) AS running FROM (
        SELECT queue, count(*) AS pending, 0 AS running FROM jobs
        WHERE state = 'pending' GROUP BY queue
        UNION ALL
        SELECT queue, 0, count(*) FROM jobs WHERE state = 'running' GROUP BY queue
    ) counted GROUP BY queue
),
samples AS (
    SELECT queue, pending, running FROM fresh
    UNION ALL
    SELECT '', 0, 0 WHERE NOT EXISTS (SELECT 1 FROM fresh)
),
forgotten AS (
    DELETE FROM queue_depth WHERE at < (SELECT at FROM minute) - interval '1 day'
)
INSERT INTO queue_depth (at, queue, pending, running)
SELECT minute.at, queue, pending, running FROM samples, minute
WHERE NOT EXISTS (SELECT 1 FROM queue_depth WHERE at = minute.at)
ON CONFLICT DO NOTHING;

-- name: depth_minute
SELECT date_trunc('minute', now()) AS at,
       EXISTS (SELECT 1 FROM queue_depth WHERE at = date_trunc('minute', now())) AS recorded;

-- name: depth_samples
SELECT at, queue, pending, running FROM queue_depth WHERE at >= %(since)s ORDER BY at, queue;
