-- Named queries of the SQLite store's flow control: paused queues and periodic schedules.

-- name: set_queue_state
INSERT INTO queue_states (queue, paused, changed_at, actor, reason) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (queue) DO UPDATE SET paused = excluded.paused, changed_at = excluded.changed_at,
    actor = excluded.actor, reason = excluded.reason
RETURNING *;

-- name: queue_states
SELECT * FROM queue_states ORDER BY queue;

-- name: queue_counts
-- Jobs by queue and state, each state from the index that holds it (as count_by_state), one
-- snapshot; pending comes in two rows per queue, which the store adds up.
SELECT queue, state, count(*) AS n FROM jobs INDEXED BY jobs_queue_state
WHERE state <> 'pending' AND state <> 'running' GROUP BY queue, state
UNION ALL
SELECT queue, 'running', count(*) FROM jobs INDEXED BY jobs_lease WHERE state = 'running'
GROUP BY queue
UNION ALL
SELECT queue, 'pending', count(*) FROM jobs INDEXED BY jobs_pending_queue
WHERE state = 'pending' AND waiting_on = 0 GROUP BY queue
UNION ALL
SELECT queue, 'pending', count(*) FROM jobs INDEXED BY jobs_waiting
WHERE state = 'pending' AND waiting_on > 0 GROUP BY queue;

-- name: save_schedule
INSERT INTO schedules (name, cron, timezone, job_type, queue, first_seen, seen_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, timezone = excluded.timezone,
    job_type = excluded.job_type, queue = excluded.queue, seen_at = excluded.seen_at
RETURNING *;

-- name: list_schedules
SELECT s.*, t.tick AS last_tick, t.job_id AS last_job_id FROM schedules s
LEFT JOIN schedule_ticks t ON t.schedule = s.name
    AND t.tick = (SELECT max(tick) FROM schedule_ticks WHERE schedule = s.name)
ORDER BY s.name;

-- name: newer_tick
-- A scheduler that computed an older tick than one already enqueued (its look began just
-- before a tick another scheduler has seen) enqueues nothing.
SELECT 1 FROM schedule_ticks WHERE schedule = ? AND tick >= ? LIMIT 1;

-- name: take_tick
-- The tick's row: the primary key (schedule, tick) lets one scheduler in, however many try.
INSERT INTO schedule_ticks (schedule, tick, job_id, enqueued_at) VALUES (?, ?, ?, ?)
ON CONFLICT DO NOTHING
RETURNING job_id;

-- name: prune_ticks
-- Ticks a week older than the newest: never asked about again (newer_tick refuses them).
DELETE FROM schedule_ticks WHERE schedule = ? AND tick < ?;
