-- Named queries of the SQLite store's search and dashboard overview.

-- name: count_jobs
-- counts: count_part's, one per index read (dash.count_clauses), added up.
SELECT {counts} AS n;

-- name: count_part
-- where: the filters of list_jobs (dash.count_clauses), with one index's states.
(SELECT count(*) FROM jobs {where})

-- name: finished_in_minute
-- One minute at a time: a covering range of the index per minute, grouped by the three
-- outcomes, is about twice as fast as one GROUP BY over the hour (which needs a temporary
-- B-tree, the minute being computed).
SELECT state, count(*) AS n FROM jobs INDEXED BY jobs_finished
WHERE state IN ('completed', 'failed', 'cancelled')
  AND finished_at IS NOT NULL AND finished_at >= ? AND finished_at < ?
GROUP BY state;

-- name: depth_recorded
SELECT 1 FROM queue_depth WHERE at = ? LIMIT 1;

-- name: record_depth
-- Pending per queue from the claim's index by queue (ready to run) and jobs_waiting (waiting
-- on a dependency), running from the lease index (migration 0012).
INSERT INTO queue_depth (at, queue, pending, running)
SELECT ?, queue, sum(pending), sum(running) FROM (
    SELECT queue, count(*) AS pending, 0 AS running FROM jobs INDEXED BY jobs_pending_queue
    WHERE state = 'pending' AND waiting_on = 0 GROUP BY queue
    UNION ALL
    SELECT queue, count(*), 0 FROM jobs INDEXED BY jobs_waiting
    WHERE state = 'pending' AND waiting_on > 0 GROUP BY queue
    UNION ALL
    SELECT queue, 0, count(*) FROM jobs INDEXED BY jobs_lease
    WHERE state = 'running' GROUP BY queue
) WHERE true GROUP BY queue
ON CONFLICT DO NOTHING;

-- name: record_depth_empty
-- A minute with no waiting job is a sample too (a zero on the chart, not a gap).
INSERT INTO queue_depth (at, queue, pending, running) VALUES (?, '', 0, 0)
ON CONFLICT DO NOTHING;

-- name: forget_depth
DELETE FROM queue_depth WHERE at < ?;

-- name: depth_samples
SELECT at, queue, pending, running FROM queue_depth WHERE at >= ? ORDER BY at, queue;
