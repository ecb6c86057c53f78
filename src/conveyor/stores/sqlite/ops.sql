-- Named queries of the SQLite store's operations: retention and the workers registry.

-- name: prune_jobs
-- One batch: the oldest finished jobs of one state, read from jobs_finished in order (the
-- history goes with them: ON DELETE CASCADE). Kept: a failed job with a retry left, and a job
-- that a requeued copy links back to.
DELETE FROM jobs WHERE seq IN (
    SELECT j.seq FROM jobs j INDEXED BY jobs_finished
    WHERE j.state = ? AND j.finished_at IS NOT NULL AND j.finished_at < ?
      AND (j.state <> 'failed' OR j.attempt >= j.max_attempts)
      AND NOT EXISTS (SELECT 1 FROM jobs c WHERE c.requeued_from = j.id)
    ORDER BY j.finished_at LIMIT ?);

-- name: count_prunable
SELECT count(*) FROM jobs j INDEXED BY jobs_finished
WHERE j.state = ? AND j.finished_at IS NOT NULL AND j.finished_at < ?
  AND (j.state <> 'failed' OR j.attempt >= j.max_attempts)
  AND NOT EXISTS (SELECT 1 FROM jobs c WHERE c.requeued_from = j.id);

-- name: beat_worker
INSERT INTO workers (id, host, pid, queues, concurrency, version, started_at, seen_at,
                     expires_at, running)
VALUES (:id, :host, :pid, :queues, :concurrency, :version, :now, :now, :expires, :running)
ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, expires_at = excluded.expires_at,
    running = excluded.running, stopped_at = NULL
RETURNING stop_requested;

-- name: end_worker
UPDATE workers SET stopped_at = ?, running = 0 WHERE id = ?;

-- name: list_workers
SELECT *, expires_at >= ? AS alive FROM workers
ORDER BY stopped_at IS NULL AND expires_at >= ? DESC, id;

-- name: request_worker_stop
UPDATE workers SET stop_requested = 1
WHERE id = ? AND stopped_at IS NULL AND expires_at >= ?
RETURNING *, 1 AS alive;

-- name: prune_workers
DELETE FROM workers WHERE coalesce(stopped_at, expires_at) < ?;
