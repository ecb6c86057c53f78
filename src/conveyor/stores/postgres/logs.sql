-- name: insert_logs
INSERT INTO job_logs (job_id, attempt, seq, at, level, message)
SELECT * FROM unnest(%(job_ids)s::text[], %(attempts)s::int[], %(seqs)s::int[],
                     %(ats)s::timestamptz[], %(levels)s::text[], %(messages)s::text[]);

-- name: trim_logs
DELETE FROM job_logs l
USING unnest(%(job_ids)s::text[], %(attempts)s::int[], %(seqs)s::int[]) AS t (job_id, attempt, seq)
WHERE l.job_id = t.job_id AND l.attempt = t.attempt AND l.seq < t.seq;

-- name: log_sizes
SELECT seq, octet_length(message) AS size FROM job_logs
WHERE job_id = %(job_id)s AND attempt = %(attempt)s ORDER BY seq;

-- name: select_logs
SELECT * FROM job_logs
WHERE job_id = %(job_id)s AND id > %(after)s
  AND (%(attempt)s::int IS NULL OR attempt = %(attempt)s::int)
ORDER BY id LIMIT %(limit)s;
