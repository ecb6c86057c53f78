-- Named queries of the PostgreSQL store's flow control: paused queues and periodic schedules.

-- name: set_queue_state
INSERT INTO queue_states (queue, paused, changed_at, actor, reason)
VALUES (%(queue)s, %(paused)s, now(), %(actor)s, %(reason)s)
ON CONFLICT (queue) DO UPDATE SET paused = excluded.paused, changed_at = excluded.changed_at,
    actor = excluded.actor, reason = excluded.reason
RETURNING *;

-- name: queue_states
SELECT * FROM queue_states ORDER BY queue;

-- name: queue_counts
SELECT queue, state, count(*) AS n FROM jobs GROUP BY queue, state;

-- name: save_schedule
INSERT INTO schedules (name, cron, timezone, job_type, queue)
VALUES (%(name)s, %(cron)s, %(timezone)s, %(job_type)s, %(queue)s)
ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, timezone = excluded.timezone,
    job_type = excluded.job_type, queue = excluded.queue, seen_at = now()
RETURNING *;

-- name: list_schedules
SELECT s.*, t.tick AS last_tick, t.job_id AS last_job_id FROM schedules s
LEFT JOIN LATERAL (
    SELECT tick, job_id FROM schedule_ticks WHERE schedule = s.name ORDER BY tick DESC LIMIT 1
) t ON true
ORDER BY s.name;

-- name: take_tick
-- The tick's row: the primary key (schedule, tick) lets one scheduler in, however many try
-- (ON CONFLICT waits for a racing insert of the same tick, then skips). A tick older than
-- one already enqueued is not taken either.
INSERT INTO schedule_ticks (schedule, tick, job_id)
SELECT %(schedule)s, %(tick)s, %(job_id)s
WHERE NOT EXISTS (SELECT 1 FROM schedule_ticks
                  WHERE schedule = %(schedule)s AND tick >= %(tick)s)
ON CONFLICT DO NOTHING
RETURNING job_id;

-- name: prune_ticks
DELETE FROM schedule_ticks
WHERE schedule = %(schedule)s AND tick < %(tick)s::timestamptz - interval '7 days';
