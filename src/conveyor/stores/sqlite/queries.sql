-- name: select_job
SELECT * FROM jobs WHERE id = ?;

-- name: select_state
SELECT state, attempt FROM jobs WHERE id = ?;

-- name: insert_history
INSERT INTO job_history (job_id, at, action, from_state, to_state, attempt, actor, reason)
VALUES (?, ?, ?, ?, ?, ?, ?, ?);

-- name: select_history
SELECT * FROM job_history WHERE job_id = ? ORDER BY id;

-- name: count_by_state
SELECT state, count(*) AS n FROM jobs GROUP BY state;

-- name: count_by_state_in_queue
SELECT state, count(*) AS n FROM jobs WHERE queue = ? GROUP BY state;

-- name: heartbeat
UPDATE jobs SET lease_expires_at = ?, updated_at = ?
WHERE id = ? AND state = 'running' AND lease_token = ? AND attempt = ?
RETURNING pause_requested, cancel_requested;

-- name: save_progress
UPDATE jobs SET current_step = ?, total_steps = ?, updated_at = ?
WHERE id = ? AND state = 'running' AND lease_token = ? AND attempt = ?
RETURNING pause_requested, cancel_requested;

-- name: save_checkpoint
UPDATE jobs SET current_step = ?, total_steps = ?, checkpoint = ?, updated_at = ?
WHERE id = ? AND state = 'running' AND lease_token = ? AND attempt = ?
RETURNING pause_requested, cancel_requested;

-- name: expired_leases
SELECT * FROM jobs WHERE state = 'running' AND lease_expires_at < ?
ORDER BY lease_expires_at LIMIT ?;

-- name: expired_pauses
-- A resume waiting for a free slot is not a pause any more: the pause timer does not apply.
SELECT * FROM jobs INDEXED BY jobs_paused
WHERE state = 'paused' AND resume_requested = 0 AND paused_at + pause_timeout < ?
ORDER BY paused_at LIMIT ?;
