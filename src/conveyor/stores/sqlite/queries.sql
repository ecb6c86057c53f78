-- name: select_job
SELECT * FROM jobs WHERE id = ?;

-- name: select_state
SELECT state, attempt FROM jobs WHERE id = ?;

-- name: insert_history
-- Arguments: job_id, at, action, from_state, to_state, attempt, actor, reason. The row is
-- keyed by its job's seq (job_history_job), looked up from the job's id.
INSERT INTO job_history (job_seq, job_id, at, action, from_state, to_state, attempt, actor,
                         reason)
VALUES ((SELECT seq FROM jobs WHERE id = ?1), ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8);

-- name: insert_history_seq
-- Arguments: job_seq, job_id, at, action, from_state, to_state, attempt, actor, reason: for a
-- job whose row the transaction has just read back (RETURNING), so its seq is known and
-- need not be looked up by its id.
INSERT INTO job_history (job_seq, job_id, at, action, from_state, to_state, attempt, actor,
                         reason)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: insert_created_last
-- The create row of the one job this connection has just inserted (arguments: job_id, at,
-- actor): its seq is last_insert_rowid(), so no lookup in the id index.
INSERT INTO job_history (job_seq, job_id, at, action, from_state, to_state, attempt, actor,
                         reason)
VALUES (last_insert_rowid(), ?, ?, 'create', NULL, 'pending', 0, ?, '');

-- name: last_seq
SELECT max(seq) FROM jobs;

-- name: insert_created_after
-- The create rows of the jobs an enqueue has just inserted in this transaction: those past
-- the largest seq before it (arguments: at, actor, that seq). A new job's seq is one more
-- than the largest, so they are exactly the batch, in its order.
INSERT INTO job_history (job_seq, job_id, at, action, from_state, to_state, attempt, actor,
                         reason)
SELECT seq, id, ?1, 'create', NULL, 'pending', 0, ?2, '' FROM jobs WHERE seq > ?3 ORDER BY seq;

-- name: select_history
-- (job_id too: a row left by a job deleted with foreign keys off never shows under another)
SELECT * FROM job_history WHERE job_seq = (SELECT seq FROM jobs WHERE id = ?1) AND job_id = ?1
ORDER BY id;

-- name: count_by_state
-- Each state from the index that holds it (migration 0012), one snapshot: the settled states
-- from (state, seq), read alone and in its order; running jobs from the lease index; pending
-- ones from the claim's index (ready to run) and jobs_waiting (waiting on a dependency).
-- Pending comes in two rows, which the store adds up.
SELECT state, count(*) AS n FROM jobs INDEXED BY jobs_state_seq
WHERE state <> 'pending' AND state <> 'running' GROUP BY state
UNION ALL
SELECT 'running', count(*) FROM jobs INDEXED BY jobs_lease WHERE state = 'running'
UNION ALL
SELECT 'pending', count(*) FROM jobs INDEXED BY jobs_pending_any
WHERE state = 'pending' AND waiting_on = 0
UNION ALL
SELECT 'pending', count(*) FROM jobs INDEXED BY jobs_waiting
WHERE state = 'pending' AND waiting_on > 0;

-- name: count_by_state_in_queue
-- count_by_state for one queue, from the same indexes keyed by queue (the lease index is not:
-- its few rows are read).
SELECT state, count(*) AS n FROM jobs INDEXED BY jobs_queue_state
WHERE queue = ?1 AND state <> 'pending' AND state <> 'running' GROUP BY state
UNION ALL
SELECT 'running', count(*) FROM jobs INDEXED BY jobs_lease WHERE state = 'running' AND queue = ?1
UNION ALL
SELECT 'pending', count(*) FROM jobs INDEXED BY jobs_pending_queue
WHERE queue = ?1 AND state = 'pending' AND waiting_on = 0
UNION ALL
SELECT 'pending', count(*) FROM jobs INDEXED BY jobs_waiting
WHERE queue = ?1 AND state = 'pending' AND waiting_on > 0;

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

-- name: insert_job
-- A column that may be NULL (timeout, requeued_from, unique_key, trace, limit_key) takes two
-- arguments, ``CASE ? WHEN 1 THEN ? END``: 1 and its value, or 0 and a placeholder (0 or '')
-- for NULL. None is never bound: Python's sqlite3 binds it through its adapter lookup, which
-- raises and clears an AttributeError, ~3,300 instructions a value (callgrind), where an int
-- or a str costs a tenth of that (see rows.job_head).
INSERT INTO jobs (id, job_type, queue, priority, params, max_attempts, run_at, line_at, timeout,
                  pause_timeout, backoff, created_at, updated_at, current_step, total_steps,
                  checkpoint, requeued_from, unique_key, trace, limit_key)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, CASE ? WHEN 1 THEN ? END, ?, ?, ?, ?, ?, ?, ?,
        CASE ? WHEN 1 THEN ? END, CASE ? WHEN 1 THEN ? END,
        CASE ? WHEN 1 THEN ? END, CASE ? WHEN 1 THEN ? END);

-- name: insert_job_plain
-- insert_job for a job whose last seven arguments would be the columns' defaults (no progress,
-- checkpoint, requeue, unique key, trace or limit key: most enqueues). Fewer values bound and
-- written by the statement: about 14,000 fewer instructions per job (callgrind).
INSERT INTO jobs (id, job_type, queue, priority, params, max_attempts, run_at, line_at, timeout,
                  pause_timeout, backoff, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, CASE ? WHEN 1 THEN ? END, ?, ?, ?, ?);

-- name: insert_job_shared
-- insert_job_plain for a batch, written a statement of many rows at a time (inserts.py,
-- insert_shared): ?1 is the batch's clock (created_at, updated_at); ?2-?9 the values that
-- consecutive jobs of the batch share (job_type, queue, priority, max_attempts, timeout as
-- two values, pause_timeout, backoff), bound once per statement; ?10-?12 one job's own (id,
-- params, run_at, also its line_at). Each next row of a statement numbers its own values
-- three on. About 5,000 fewer instructions per job than binding every value of every row.
INSERT INTO jobs (id, job_type, queue, priority, params, max_attempts, run_at, line_at, timeout,
                  pause_timeout, backoff, created_at, updated_at)
VALUES (?10, ?2, ?3, ?4, ?11, ?5, ?12, ?12, CASE ?6 WHEN 1 THEN ?7 END, ?8, ?9, ?1, ?1);

-- name: insert_job_returning
-- A unique key already held by an unfinished job (jobs_unique_key) inserts nothing and
-- returns no row: the caller then reads that job (select_unfinished_by_key).
INSERT INTO jobs (id, job_type, queue, priority, params, max_attempts, run_at, line_at, timeout,
                  pause_timeout, backoff, created_at, updated_at, current_step, total_steps,
                  checkpoint, requeued_from, unique_key, trace, limit_key)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, CASE ? WHEN 1 THEN ? END, ?, ?, ?, ?, ?, ?, ?,
        CASE ? WHEN 1 THEN ? END, CASE ? WHEN 1 THEN ? END,
        CASE ? WHEN 1 THEN ? END, CASE ? WHEN 1 THEN ? END)
ON CONFLICT DO NOTHING
RETURNING *;

-- name: select_unfinished_by_key
SELECT * FROM jobs INDEXED BY jobs_unique_key
WHERE unique_key = ? AND unique_key IS NOT NULL
  AND (state IN ('pending', 'running', 'paused')
       OR (state = 'failed' AND attempt < max_attempts));

-- name: select_jobs
-- ids: one placeholder per id (at most 500 at a time, well under SQLite's limit).
SELECT * FROM jobs WHERE id IN ({ids});

-- name: list_jobs
-- where: the filters asked for, joined by AND (an IN-list per column, then list_before: the
-- cursor, only jobs created before the given one, none when it does not exist).
SELECT * FROM jobs {where} ORDER BY seq DESC LIMIT ?;

-- name: list_before
seq < coalesce((SELECT seq FROM jobs WHERE id = ?), -1);

-- name: apply_change
-- One compare-and-set: sets and where come from the change compiler (changes.py).
UPDATE jobs SET {sets} WHERE {where} RETURNING *;

-- name: apply_change_batch
-- Many compare-and-sets of one shape (changes.compile_batch): values holds one row per job, and
-- sets and where read each job's own values from it (batch.column1, ...). RETURNING * gives the
-- columns of jobs only, for the jobs that matched.
UPDATE jobs SET {sets} FROM (VALUES {values}) AS batch WHERE {where} RETURNING *;

-- name: apply_change_landed
-- apply_change for a caller that needs only whether the change landed, not the job: the
-- columns of its history row and has_dependents (a job with dependents is read in full after
-- it, by select_changed). A row of all ~37 columns costs SQLite and Python a value each.
UPDATE jobs SET {sets} WHERE {where} RETURNING seq, id, state, attempt, has_dependents;

-- name: apply_change_quiet
-- apply_change_landed without RETURNING, for one change alone (a one-slot worker's completion,
-- every time): RETURNING makes SQLite build a temporary table for the returned rows at each
-- run. Whether it landed: the cursor's rowcount; then its row as select_landed reads it.
UPDATE jobs SET {sets} WHERE {where};

-- name: select_landed
-- The columns apply_change_landed returns, of the one job apply_change_quiet has just changed
-- in this transaction (by its id: the write lock is held, so the row is as that change left it).
SELECT seq, id, state, attempt, has_dependents FROM jobs WHERE id = ?;

-- name: apply_change_batch_landed
-- apply_change_batch returning what apply_change_landed returns.
UPDATE jobs SET {sets} FROM (VALUES {values}) AS batch WHERE {where}
RETURNING seq, id, state, attempt, has_dependents;

-- name: select_changed
-- A job just changed in this transaction, read back in full by its seq (apply_change_landed).
SELECT * FROM jobs WHERE seq = ?;

-- name: claim_candidates
-- The claim's candidates in one statement: resumable jobs (source 'paused'), then pending ones,
-- each branch walking its partial index in claim order and stopping at its LIMIT. job_types:
-- one placeholder per type; the arguments are the resumable branch's, then the pending
-- branch's. {in_queue}: empty for a claim from any queue; for a claim from one queue,
-- `queue = ? AND`, its argument first in each branch, with {pending_index} the pending jobs'
-- index by queue (jobs_pending_queue) instead of any queue's (jobs_pending_any). A worker
-- claims only jobs whose payloads decode: it must never run one with lost params. A paused
-- queue is looked up per candidate (the primary key of queue_states): NOT IN (SELECT ...)
-- would build a temporary B-tree of the paused queues at every claim.
-- limited: whether any limit is set (flow_limits holds a row); only then does the claim read
-- the limits (limits.py). A claim that finds no candidate has nothing to limit. The columns
-- are read by position (worker_path._candidates): source, id, paused_at, priority, line_at,
-- seq, limited.
SELECT * FROM (
    SELECT 'paused' AS source, id, paused_at, 0 AS priority, 0 AS line_at, 0 AS seq,
           EXISTS (SELECT 1 FROM flow_limits) AS limited
    FROM jobs INDEXED BY jobs_resumable
    WHERE {in_queue} state = 'paused' AND resume_requested = 1 AND job_type IN ({job_types})
      AND json_valid(params) AND json_valid(checkpoint) AND json_valid(backoff)
      AND typeof(run_at) IN ('integer', 'real')
      AND NOT EXISTS (SELECT 1 FROM queue_states q WHERE q.queue = jobs.queue AND q.paused = 1)
    ORDER BY paused_at LIMIT ?)
UNION ALL
SELECT * FROM (
    SELECT 'pending', id, NULL, priority, line_at, seq, EXISTS (SELECT 1 FROM flow_limits)
    FROM jobs INDEXED BY {pending_index}
    WHERE {in_queue} state = 'pending' AND run_at <= ? AND job_type IN ({job_types})
      AND waiting_on = 0  -- no dependency left to wait for
      AND json_valid(params) AND json_valid(checkpoint) AND json_valid(backoff)
      AND typeof(run_at) IN ('integer', 'real')
      AND NOT EXISTS (SELECT 1 FROM queue_states q WHERE q.queue = jobs.queue AND q.paused = 1)
    ORDER BY priority DESC, line_at, seq LIMIT ?);

-- name: pending_candidates
-- The usual claim's pending candidates (claim_candidates' pending branch, the same filters and
-- order), by seq, the table's rowid: found without the id index. None while a job of the
-- claim's types (and queue) waits to be resumed (a claim resumes those first); the statement
-- that starts them (claim_pending, whose candidates these are, or claim_seq for one job)
-- writes nothing while a limit is set anywhere (flow_limits holds a row). The claim that takes
-- nothing asks claim_candidates, as before (limits.py, the resumable branch). Arguments:
-- {in_queue}'s, now, the job types, {in_queue}'s and the job types again, the limit.
SELECT seq FROM jobs INDEXED BY {pending_index}
WHERE {in_queue} state = 'pending' AND run_at <= ? AND job_type IN ({job_types})
  AND waiting_on = 0  -- no dependency left to wait for
  AND json_valid(params) AND json_valid(checkpoint) AND json_valid(backoff)
  AND typeof(run_at) IN ('integer', 'real')
  AND NOT EXISTS (SELECT 1 FROM queue_states q WHERE q.queue = jobs.queue AND q.paused = 1)
  AND NOT EXISTS (SELECT 1 FROM jobs r INDEXED BY jobs_resumable
                  WHERE {in_queue} r.state = 'paused' AND r.resume_requested = 1
                    AND r.job_type IN ({job_types}))
ORDER BY priority DESC, line_at, seq LIMIT ?

-- name: claim_pending
-- The usual claim in one statement: its pending candidates (pending_candidates,
-- claim_candidates' pending branch, the same filters and order) and their start (sets and guards: the claim's change, as
-- apply_change writes it, its `id = ?` replaced by the candidates). Only while nothing would
-- make the claim take other jobs than these: no limit set anywhere (flow_limits empty) and no
-- job of the claim's types (and queue) waiting to be resumed (a claim resumes those first).
-- Otherwise it writes nothing, and the claim that finds no row asks claim_candidates, as before
-- (limits.py, the resumable branch). Arguments: the sets', then the candidates' ({in_queue}'s,
-- now, the job types, {in_queue}'s and the job types again, the limit), then the guards'. The
-- rows come back in no set order: the caller sorts them in claim order. The rows are picked
-- by seq, the table's rowid, found without the id index (~14k fewer instructions per claim of
-- four). A claim of one job (a one-slot worker's, every time) is claim_seq's instead, its
-- candidate read by pending_candidates alone.
UPDATE jobs SET {sets}
WHERE seq IN ({candidates})
  AND {guards}
  AND NOT EXISTS (SELECT 1 FROM flow_limits)
RETURNING *;


-- name: claim_seq
-- The usual claim of one job (a one-slot worker's, every time): its start by seq, after
-- pending_candidates found it (LIMIT 1), then the row read back (select_changed). Three
-- statements, where claim_pending's one (`seq = (candidates) ... RETURNING *`) makes SQLite
-- build a temporary table for the returned row at every claim. With apply_change_quiet, a
-- one-job worker transaction (the bench's floor, callgrind, per job): SQLite's own work
-- ~362k -> ~293k instructions, the whole ~527k -> ~495k (the extra statements' Python). The
-- write lock is held from the read to the write, so the job is still pending; the guards
-- are the claim's change's, as ever. It writes nothing while a limit is set anywhere, as
-- claim_pending.
UPDATE jobs SET {sets} WHERE seq = ? AND {guards} AND NOT EXISTS (SELECT 1 FROM flow_limits);

-- name: application_id
PRAGMA application_id;

-- name: set_application_id
-- An integer constant, formatted in: PRAGMA takes no bound parameters.
PRAGMA application_id = {application_id};

-- name: schema_version
PRAGMA user_version;

-- name: set_schema_version
-- An integer constant, formatted in: PRAGMA takes no bound parameters.
PRAGMA user_version = {version};

-- name: user_tables
-- What a file that is not a conveyor database holds (named in the refusal).
SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%';
