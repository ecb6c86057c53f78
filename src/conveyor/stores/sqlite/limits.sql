-- Named queries of the SQLite store's claim-time limits (see conveyor.limits).

-- name: all_limits
SELECT * FROM flow_limits ORDER BY scope, name;

-- name: upsert_limit
-- An unchanged limit keeps who set it and when (every worker records its types' limits as it
-- starts): RETURNING then gives no row.
INSERT INTO flow_limits (scope, name, max_running, rate_count, rate_seconds, key, changed_at,
                         actor, reason)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (scope, name) DO UPDATE SET max_running = excluded.max_running,
    rate_count = excluded.rate_count, rate_seconds = excluded.rate_seconds,
    key = excluded.key, changed_at = excluded.changed_at, actor = excluded.actor,
    reason = excluded.reason
WHERE flow_limits.max_running IS NOT excluded.max_running
   OR flow_limits.rate_count IS NOT excluded.rate_count
   OR flow_limits.rate_seconds IS NOT excluded.rate_seconds
   OR flow_limits.key IS NOT excluded.key
   OR flow_limits.scope = 'queue'
RETURNING *;

-- name: select_limit
SELECT * FROM flow_limits WHERE scope = ? AND name = ?;

-- name: delete_limit
DELETE FROM flow_limits WHERE scope = ? AND name = ?;

-- name: forget_rates
DELETE FROM rate_claims WHERE scope = ? AND name = ?;

-- name: running_counts
-- Running jobs hold a lease: the lease index lists exactly them.
SELECT job_type, queue, limit_key, count(*) AS n FROM jobs INDEXED BY jobs_lease
WHERE state = 'running' GROUP BY job_type, queue, limit_key;

-- name: prune_rates
DELETE FROM rate_claims WHERE scope = ? AND name = ? AND at <= ?;

-- name: rate_counts
SELECT limit_key, count(*) AS n FROM rate_claims
WHERE scope = ? AND name = ? AND at > ? GROUP BY limit_key;

-- name: record_rate
INSERT INTO rate_claims (scope, name, limit_key, at) VALUES (?, ?, ?, ?);

-- name: limited_resumable
-- The limited claim's candidates: as claim_candidates' two branches, less what is full
-- ({where}: the queues asked for, then the full types, queues and (type, key) pairs).
SELECT id, job_type, queue, limit_key FROM jobs INDEXED BY jobs_resumable
WHERE state = 'paused' AND resume_requested = 1 AND job_type IN ({job_types}) {where}
  AND json_valid(params) AND json_valid(checkpoint) AND json_valid(backoff)
  AND typeof(run_at) IN ('integer', 'real')
  AND NOT EXISTS (SELECT 1 FROM queue_states q WHERE q.queue = jobs.queue AND q.paused = 1)
ORDER BY paused_at LIMIT ?;

-- name: limited_pending
SELECT id, job_type, queue, limit_key FROM jobs INDEXED BY jobs_pending_any
WHERE state = 'pending' AND run_at <= ? AND job_type IN ({job_types}) {where}
  AND waiting_on = 0  -- no dependency left to wait for
  AND json_valid(params) AND json_valid(checkpoint) AND json_valid(backoff)
  AND typeof(run_at) IN ('integer', 'real')
  AND NOT EXISTS (SELECT 1 FROM queue_states q WHERE q.queue = jobs.queue AND q.paused = 1)
ORDER BY priority DESC, line_at, seq LIMIT ?;
