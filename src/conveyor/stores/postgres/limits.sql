-- Named queries of the PostgreSQL store's claim-time limits (see conveyor.limits).

-- name: all_limits
SELECT * FROM flow_limits ORDER BY scope, name;

-- name: upsert_limit
-- An unchanged job type limit keeps who set it and when (every worker records its types'
-- limits as it starts).
INSERT INTO flow_limits (scope, name, max_running, rate_count, rate_seconds, key, actor,
                         reason)
VALUES (%(scope)s, %(name)s, %(max_running)s, %(rate_count)s, %(rate_seconds)s, %(key)s,
        %(actor)s, %(reason)s)
ON CONFLICT (scope, name) DO UPDATE SET max_running = excluded.max_running,
    rate_count = excluded.rate_count, rate_seconds = excluded.rate_seconds,
    key = excluded.key, changed_at = now(), actor = excluded.actor, reason = excluded.reason
WHERE (flow_limits.max_running, flow_limits.rate_count, flow_limits.rate_seconds,
       flow_limits.key) IS DISTINCT FROM
      (excluded.max_running, excluded.rate_count, excluded.rate_seconds, excluded.key)
   OR flow_limits.scope = 'queue'
RETURNING *;

-- name: delete_limit
WITH gone AS (
    DELETE FROM flow_limits WHERE scope = %(scope)s AND name = ANY(%(names)s::text[])
    RETURNING scope, name
)
DELETE FROM rate_claims USING gone
WHERE rate_claims.scope = gone.scope AND rate_claims.name = gone.name;

-- name: forget_rates
DELETE FROM rate_claims WHERE scope = %(scope)s AND name = %(name)s;

-- name: lock_limits
-- One transaction-level advisory lock per limit the claim obeys, taken in key order (so two
-- claimers never wait on each other in a cycle), released at commit, after the claim is
-- visible: the next claimer's counts see it. The moment is read once the locks are held.
SELECT clock_timestamp() AS at
FROM (SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%(keys)s::bigint[]) AS k) AS locked;

-- name: running_counts
SELECT job_type, queue, limit_key, count(*) AS n FROM jobs
WHERE state = 'running' GROUP BY job_type, queue, limit_key;

-- name: rate_counts
-- Claims inside each rate limit's window; older ones are deleted on the way (a statement's
-- snapshot does not see its own deletes, hence the window test in the count too).
WITH rule AS (
    SELECT * FROM unnest(%(scopes)s::text[], %(names)s::text[], %(seconds)s::float8[])
        AS rule (scope, name, seconds)
), pruned AS (
    DELETE FROM rate_claims c USING rule
    WHERE %(prune)s AND c.scope = rule.scope AND c.name = rule.name
      AND c.at <= %(at)s::timestamptz - rule.seconds * interval '1 second'
)
SELECT c.scope, c.name, c.limit_key, count(*) AS n
FROM rate_claims c JOIN rule ON c.scope = rule.scope AND c.name = rule.name
WHERE c.at > %(at)s::timestamptz - rule.seconds * interval '1 second'
GROUP BY c.scope, c.name, c.limit_key;

-- name: record_rates
INSERT INTO rate_claims (scope, name, limit_key, at)
SELECT scope, name, limit_key, %(at)s
FROM unnest(%(scopes)s::text[], %(names)s::text[], %(keys)s::text[]) AS r (scope, name, limit_key);

-- name: limited_candidates
-- As the claim's candidates (resumable first, then pending in claim order), less what is full:
-- whole types, whole queues and (type, key) pairs. Row locks as the claim takes them.
WITH resumable AS (
    SELECT id, job_type, queue, limit_key, 'paused'::text AS source, 0 AS pick_rank,
           0 AS pick_priority, paused_at AS pick_at, seq
    FROM jobs
    WHERE state = 'paused' AND resume_requested
      AND job_type = ANY(%(job_types)s::text[]) {queue_filter}
      AND queue NOT IN (SELECT queue FROM queue_states WHERE paused)  -- paused queues
      AND NOT job_type = ANY(%(full_types)s::text[])
      AND NOT queue = ANY(%(full_queues)s::text[])
      AND (job_type, coalesce(limit_key, '')) NOT IN (
          SELECT * FROM unnest(%(pair_types)s::text[], %(pair_keys)s::text[]))
    ORDER BY paused_at, seq
    LIMIT %(scan)s
    FOR UPDATE SKIP LOCKED
), pending AS (
    SELECT id, job_type, queue, limit_key, 'pending'::text AS source, 1 AS pick_rank,
           priority AS pick_priority, line_at AS pick_at, seq
    FROM jobs
    WHERE state = 'pending' AND run_at <= now()
      AND waiting_on = 0  -- no dependency left to wait for
      AND job_type = ANY(%(job_types)s::text[]) {queue_filter}
      AND queue NOT IN (SELECT queue FROM queue_states WHERE paused)  -- paused queues
      AND NOT job_type = ANY(%(full_types)s::text[])
      AND NOT queue = ANY(%(full_queues)s::text[])
      AND (job_type, coalesce(limit_key, '')) NOT IN (
          SELECT * FROM unnest(%(pair_types)s::text[], %(pair_keys)s::text[]))
    ORDER BY priority DESC, line_at, seq
    LIMIT %(scan)s
    FOR UPDATE SKIP LOCKED
)
SELECT * FROM resumable UNION ALL SELECT * FROM pending
ORDER BY pick_rank, pick_priority DESC, pick_at, seq;

-- name: claim_picked
-- The limited claim's update of the jobs it chose (locked by limited_candidates), as claim.
WITH picked AS (
    SELECT * FROM unnest(%(ids)s::text[], %(sources)s::text[]) WITH ORDINALITY
        AS picked (id, source, ord)
), started AS (
    UPDATE jobs SET {sets}
    FROM picked
    WHERE jobs.id = picked.id AND jobs.state = picked.source
      AND (picked.source = 'pending' OR jobs.resume_requested)
    RETURNING jobs.*, picked.source AS old_state, picked.ord
), logged AS (
    INSERT INTO job_history (job_id, at, action, from_state, to_state, attempt, actor, reason)
    SELECT id, now(),
           CASE old_state WHEN 'pending' THEN %(start_action)s ELSE %(resume_action)s END,
           old_state, state, attempt, %(worker_id)s, ''
    FROM started
)
SELECT * FROM started ORDER BY ord;
