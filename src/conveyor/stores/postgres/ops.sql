-- Named queries of the PostgreSQL store's operations: retention and the workers registry.

-- name: prune_jobs
-- One batch: the oldest finished jobs of one state, read from jobs_finished in order, and their
-- history in the same statement (job_history has no foreign key to cascade it since schema
-- 11). SKIP LOCKED: a row someone holds is left for a later batch, so a prune never waits.
-- Kept: a failed job with a retry left, and a job that a requeued copy links back to. Returns
-- how many jobs went.
WITH gone AS (
    DELETE FROM jobs WHERE id IN (
        SELECT j.id FROM jobs j
        WHERE j.state = %(state)s AND j.finished_at IS NOT NULL
          AND j.finished_at < now() - make_interval(secs => %(age)s)
          AND (j.state <> 'failed' OR j.attempt >= j.max_attempts)
          AND NOT EXISTS (SELECT 1 FROM jobs c WHERE c.requeued_from = j.id)
        ORDER BY j.finished_at LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED)
    RETURNING id
), forgotten AS (
    DELETE FROM job_history WHERE job_id IN (SELECT id FROM gone)
)
SELECT count(*) AS n FROM gone;

-- name: count_prunable
SELECT count(*) AS n FROM jobs j
WHERE j.state = %(state)s AND j.finished_at IS NOT NULL
  AND j.finished_at < now() - make_interval(secs => %(age)s)
  AND (j.state <> 'failed' OR j.attempt >= j.max_attempts)
  AND NOT EXISTS (SELECT 1 FROM jobs c WHERE c.requeued_from = j.id);

-- name: beat_worker
INSERT INTO workers (id, host, pid, queues, concurrency, version, expires_at, running)
VALUES (%(id)s, %(host)s, %(pid)s, %(queues)s, %(concurrency)s, %(version)s,
        now() + make_interval(secs => %(ttl)s), %(running)s)
ON CONFLICT (id) DO UPDATE SET seen_at = now(), expires_at = excluded.expires_at,
    running = excluded.running, stopped_at = NULL
RETURNING stop_requested;

-- name: end_worker
UPDATE workers SET stopped_at = now(), running = 0 WHERE id = %(id)s;

-- name: list_workers
SELECT *, expires_at >= now() AS alive FROM workers
ORDER BY stopped_at IS NULL AND expires_at >= now() DESC, id;

-- name: request_worker_stop
UPDATE workers SET stop_requested = true
WHERE id = %(id)s AND stopped_at IS NULL AND expires_at >= now()
RETURNING *, true AS alive;

-- name: prune_workers
DELETE FROM workers
WHERE coalesce(stopped_at, expires_at) < now() - make_interval(secs => %(age)s);
