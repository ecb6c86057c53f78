-- name: insert_log
INSERT INTO job_logs (job_id, attempt, seq, at, level, message) VALUES (?, ?, ?, ?, ?, ?);

-- name: trim_logs
DELETE FROM job_logs WHERE job_id = ? AND attempt = ? AND seq < ?;

-- name: log_sizes
SELECT seq, length(CAST(message AS BLOB)) AS size FROM job_logs
WHERE job_id = ? AND attempt = ? ORDER BY seq;

-- name: select_logs
SELECT * FROM job_logs WHERE job_id = ? AND id > ? AND (? IS NULL OR attempt = ?)
ORDER BY id LIMIT ?;
