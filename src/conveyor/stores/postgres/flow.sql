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
