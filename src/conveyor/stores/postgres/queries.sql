-- Named queries of the PostgreSQL store. Unqualified names resolve in the store's schema
-- (search_path is set on every connection). Blocks holding {braces} are templates that the
-- store completes with psycopg.sql from whitelisted column names only.

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: has_migrations_table
SELECT to_regclass('schema_migrations') IS NOT NULL AS present;

-- name: schema_version
SELECT coalesce(max(version), 0) AS version FROM schema_migrations;

-- name: record_migration
INSERT INTO schema_migrations (version, name) VALUES (%(version)s, %(name)s);

-- name: lock_migrations
SELECT pg_advisory_xact_lock(%(key)s);

-- name: foreign_tables
SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND c.relname <> 'schema_migrations'
ORDER BY c.relname;

-- name: now
SELECT now() AS now;

-- name: caller_connection
-- What enqueue(connection=...) checks of a caller's connection first: its database, whether
-- the store's schema is set up there, and the search_path to put back afterwards.
SELECT current_database() AS database, current_setting('search_path') AS path,
       to_regclass(format('%%I.jobs', %(schema)s::text)) IS NOT NULL AS present;

-- name: set_path
-- For the current transaction only (is_local): the caller's session is left as it was.
SELECT set_config('search_path', %(path)s, true) AS path;

-- name: notify
SELECT pg_notify(%(channel)s, '');

-- name: insert_jobs
-- One statement for the whole batch, run in autocommit (one round trip): the jobs, in input
-- order (so seq follows it), a 'create' history row each, and the NOTIFY that wakes workers
-- (delivered at commit, when the jobs become visible). params come as text already encoded
-- by the core; run_at NULL means now() plus the delay, if any. The arrays are sent in binary
-- format: the text format quotes every JSON element, which cost more than the insert.
WITH new AS (
    SELECT * FROM unnest(
        %(ids)b::text[], %(job_types)b::text[], %(queues)b::text[], %(priorities)b::int[],
        %(params)b::text[], %(max_attempts)b::int[], %(run_ats)b::timestamptz[],
        %(delays)b::float8[], %(timeouts)b::float8[], %(pause_timeouts)b::float8[],
        %(backoffs)b::jsonb[], %(current_steps)b::bigint[], %(total_steps)b::bigint[],
        %(checkpoints)b::jsonb[], %(requeued_froms)b::text[], %(unique_keys)b::text[],
        %(traces)b::text[], %(limit_keys)b::text[]
    ) WITH ORDINALITY AS n (id, job_type, queue, priority, params, max_attempts, run_at, delay,
                            timeout, pause_timeout, backoff, current_step, total_steps,
                            checkpoint, requeued_from, unique_key, trace, limit_key, ord)
), timed AS (
    SELECT new.*, coalesce(run_at, now() + make_interval(secs => coalesce(delay, 0))) AS due
    FROM new
), inserted AS (
    INSERT INTO jobs (id, job_type, queue, priority, params, max_attempts, run_at, line_at,
                      timeout, pause_timeout, backoff, current_step, total_steps, checkpoint,
                      requeued_from, unique_key, trace, limit_key, created_at, updated_at)
    SELECT id, job_type, queue, priority, params::jsonb, max_attempts, due, due, timeout,
           pause_timeout, backoff, current_step, total_steps, checkpoint, requeued_from,
           unique_key, trace, limit_key, now(), now()
    FROM timed ORDER BY ord
    -- a unique key an unfinished job holds (jobs_unique_key) inserts nothing: the store then
    -- reads that job by select_unfinished_by_key, in a statement of its own (which sees it)
    ON CONFLICT DO NOTHING
    RETURNING *
), logged AS (
    INSERT INTO job_history (job_id, at, action, from_state, to_state, attempt, actor, reason)
    SELECT i.id, now(), 'create', NULL, i.state, i.attempt, %(actor)s, ''
    FROM inserted i JOIN new USING (id) ORDER BY new.ord
), notified AS (
    SELECT pg_notify(%(channel)s, '') AS sent
)
SELECT inserted.* FROM inserted JOIN new USING (id) CROSS JOIN notified ORDER BY new.ord;

-- name: insert_job
-- One job without a unique key (the common enqueue): insert_jobs with plain parameters, not
-- one-element arrays, which cost the client more to send than the server to run. Returns
-- only what the server decided (see insert_jobs_brief in statements.py): the job is built
-- from what was sent.
WITH inserted AS (
    INSERT INTO jobs (id, job_type, queue, priority, params, max_attempts, run_at, line_at,
                      timeout, pause_timeout, backoff, current_step, total_steps, checkpoint,
                      requeued_from, trace, limit_key, created_at, updated_at)
    SELECT %(id)s, %(job_type)s, %(queue)s, %(priority)s, %(params)s::jsonb,
           %(max_attempts)s, due, due, %(timeout)s::float8, %(pause_timeout)s::float8,
           %(backoff)s::jsonb, %(current_step)s::bigint, %(total_steps)s::bigint,
           %(checkpoint)s::jsonb, %(requeued_from)s::text, %(trace)s::text,
           %(limit_key)s::text, now(), now()
    FROM (SELECT coalesce(%(run_at)s::timestamptz,
                          now() + make_interval(secs => coalesce(%(delay)s::float8, 0)))
                 AS due) AS timed
    RETURNING id, state, attempt, created_at, run_at
), logged AS (
    INSERT INTO job_history (job_id, at, action, from_state, to_state, attempt, actor, reason)
    SELECT id, now(), 'create', NULL, state, attempt, %(actor)s, '' FROM inserted
), notified AS (
    SELECT pg_notify(%(channel)s, '') AS sent
)
SELECT inserted.created_at,
       (extract(epoch FROM inserted.run_at - inserted.created_at) * 1000000)::bigint AS due_in_us
FROM inserted CROSS JOIN notified;

-- name: copy_jobs
-- A large batch of plain jobs (no unique key, dependency, run_at or delay): the rows stream
-- in binary by COPY, in input order (so seq follows it), in the caller's transaction after
-- copy_clock and before copy_history. run_at, line_at, created_at and updated_at are left to
-- their default, now(): the transaction's one clock, the same as insert_jobs gives them.
COPY jobs (id, job_type, queue, priority, params, max_attempts, timeout, pause_timeout, backoff,
           current_step, total_steps, checkpoint, requeued_from, trace, limit_key)
FROM STDIN (FORMAT BINARY);

-- name: copy_history
COPY job_history (job_id, action, to_state, attempt, actor) FROM STDIN (FORMAT BINARY);

-- name: copy_clock
-- First in a COPY batch's transaction: the clock copy_jobs's rows will take (now() is the
-- transaction's start, the same for every statement of it), so the store builds the returned
-- jobs while the server is still storing the rows; and the NOTIFY that wakes workers, held
-- by the server until the commit makes the jobs visible (dropped if the transaction rolls
-- back), once for the whole batch.
SELECT now() AS created_at, pg_notify(%(channel)s, '') AS sent;

-- name: select_job
SELECT * FROM jobs WHERE id = %(id)s;

-- name: select_unfinished_by_key
SELECT * FROM jobs
WHERE unique_key = %(key)s
  AND (state IN ('pending', 'running', 'paused')
       OR (state = 'failed' AND attempt < max_attempts));

-- name: select_jobs
SELECT * FROM jobs WHERE id = ANY(%(ids)s::text[]);

-- name: list_jobs
SELECT * FROM jobs {where} ORDER BY seq DESC LIMIT %(limit)s;

-- name: count_by_state
-- Two statements (statements.count_statement), not one with `queue IS NULL OR ...`: a prepared
-- statement's generic plan cannot drop that OR, so it scanned the whole table for one queue.
SELECT state, count(*) AS n FROM jobs GROUP BY state;

-- name: count_by_state_in_queue
SELECT state, count(*) AS n FROM jobs WHERE queue = %(queue)s GROUP BY state;

-- name: select_history
SELECT * FROM job_history WHERE job_id = %(id)s ORDER BY id;

-- name: generic_plans
-- First in a worker's pipeline holding a batch (its own transaction only, is_local): the
-- statements after it, once psycopg prepares them, run one plan made once per connection.
-- Left to choose (auto), the server planned the batch of completions again at each call, its
-- 'custom' plans costed below the generic one only because unnest() of a parameter looks like
-- 100 rows: planning took as long as running it, and the custom plan walked every running
-- job's index entries (state = 'running' read as a constant) where the generic one reads each
-- row by id. A pipeline without a batch (one change, the claim) goes without: the server
-- picks those statements' generic plans itself after five runs (one statement less a turn
-- for a worker of one slot).
SELECT set_config('plan_cache_mode', 'force_generic_plan', true) AS mode;

-- name: apply_change
-- One compare-and-set. `old` locks the row first ({lock}: a reaper skips a locked row rather
-- than wait on it), so old_state is the state this update really moved from even when another
-- transaction changed the row a moment before. `moment` reads the clock once that lock is
-- granted: the time the change took effect, for every timestamp it writes and its guards (the
-- later changes of one transaction pass the first one's moment in).
WITH old AS (
    SELECT id AS old_id, state AS old_state FROM jobs WHERE id = %(job_id)s {lock}
), moment AS (
    SELECT old_id AS moment_id,
           coalesce(%(moment)s::timestamptz, clock_timestamp()) AS at
    FROM old
), changed AS (
    UPDATE jobs SET {sets}
    FROM old JOIN moment ON moment.moment_id = old.old_id
    WHERE {where}
    RETURNING jobs.*, old.old_state, moment.at AS moved_at
), logged AS (
    INSERT INTO job_history (job_id, at, action, from_state, to_state, attempt, actor, reason)
    SELECT id, moved_at, %(action)s, old_state, state, attempt, %(actor)s, %(reason)s
    FROM changed
)
-- a job that stops (finishes or pauses) is announced to its waiters (Conveyor.wait), at commit,
-- if it has any (watched: see migration 0009)
SELECT changed.*, CASE WHEN changed.state = ANY(%(stops)s::text[]) AND changed.watched
                       THEN pg_notify(%(stop_channel)s, changed.id) END IS NULL AS unannounced
FROM changed;

-- name: apply_change_batch
-- apply_change for many jobs at once (a worker's batch of completions), one statement: each
-- row's values come from the arrays ({arrays}, one element per job), the rest is the same for
-- all. Every row is still its own compare-and-set ({where}); a refused row writes nothing.
-- The rows are locked in id order (two batches never deadlock), and `moment` is read once
-- the locks are granted.
WITH batch AS (
    SELECT * FROM unnest({arrays}) WITH ORDINALITY AS batch ({columns}, batch_n)
), old AS (
    SELECT id AS old_id, state AS old_state FROM jobs
    WHERE id IN (SELECT job_id FROM batch) ORDER BY id {lock}
), moment AS (
    SELECT clock_timestamp() AS at FROM (SELECT count(*) FROM old) AS locked
), changed AS (
    UPDATE jobs SET {sets}
    FROM batch JOIN old ON old.old_id = batch.job_id CROSS JOIN moment
    WHERE jobs.id = batch.job_id AND {where}
    RETURNING jobs.*, old.old_state, moment.at AS moved_at, batch.batch_n,
              batch.action AS history_action, batch.actor AS history_actor,
              batch.reason AS history_reason
), logged AS (
    INSERT INTO job_history (job_id, at, action, from_state, to_state, attempt, actor, reason)
    SELECT id, moved_at, history_action, old_state, state, attempt, history_actor,
           history_reason
    FROM changed
)
-- each job that stops (finishes or pauses) is announced to its waiters, if it has any, at commit
SELECT changed.*, CASE WHEN changed.state = ANY(%(stops)s::text[]) AND changed.watched
                       THEN pg_notify(%(stop_channel)s, changed.id) END IS NULL AS unannounced
FROM changed;

-- name: watch_job
-- A waiter's mark (Conveyor.wait): the job's stops are announced from now on. An UPDATE, so it
-- waits for a change holding the row and is seen by every change after it; NOT watched: a job
-- marked already is not written again.
UPDATE jobs SET watched = true WHERE id = %(id)s AND NOT watched;

-- name: claim
-- Resumable jobs first, then pending ones by priority, place in line (line_at; run_at is only
-- the not-before time) and insertion. SKIP LOCKED lets
-- concurrent claimers pass each other's rows instead of queueing behind them, and the row
-- locks make sure no job is handed out twice. Each CTE has a constant LIMIT so the planner
-- knows how few rows come out, and updates them through the primary key.
WITH resumable AS (
    SELECT id, paused_at, seq FROM jobs
    WHERE state = 'paused' AND resume_requested
      AND job_type = ANY(%(job_types)s::text[]) {queue_filter}
      AND queue NOT IN (SELECT queue FROM queue_states WHERE paused)  -- paused queues
    ORDER BY paused_at, seq
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), pending AS (
    SELECT id, priority, line_at, seq FROM jobs
    WHERE state = 'pending' AND run_at <= now()
      AND waiting_on = 0  -- no dependency left to wait for
      AND job_type = ANY(%(job_types)s::text[]) {queue_filter}
      AND queue NOT IN (SELECT queue FROM queue_states WHERE paused)  -- paused queues
    ORDER BY priority DESC, line_at, seq
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT * FROM (
        SELECT id, 'paused'::text AS source, 0 AS pick_rank, 0 AS pick_priority,
               paused_at AS pick_at, seq AS pick_seq
        FROM resumable
        UNION ALL
        SELECT id, 'pending'::text, 1, priority, line_at, seq FROM pending
    ) AS candidates
    -- the gate: while a limit applies to these types or queues, this claims nothing and the
    -- store claims through claim_limited instead (limits.sql)
    WHERE NOT EXISTS (SELECT 1 FROM flow_limits
                      WHERE CASE scope WHEN 'type' THEN name = ANY(%(job_types)s::text[])
                            ELSE cardinality(%(queues)s::text[]) = 0
                                 OR name = ANY(%(queues)s::text[]) END)
    ORDER BY pick_rank, pick_priority DESC, pick_at, pick_seq
    LIMIT %(limit)s
), started AS (
    UPDATE jobs SET {sets}
    FROM picked
    WHERE jobs.id = picked.id AND jobs.state = picked.source
      AND (picked.source = 'pending' OR jobs.resume_requested)
    RETURNING jobs.*, picked.source AS old_state, picked.pick_rank, picked.pick_priority,
              picked.pick_at
), logged AS (
    INSERT INTO job_history (job_id, at, action, from_state, to_state, attempt, actor, reason)
    SELECT id, now(),
           CASE old_state WHEN 'pending' THEN %(start_action)s ELSE %(resume_action)s END,
           old_state, state, attempt, %(worker_id)s, ''
    FROM started
)
SELECT * FROM started ORDER BY pick_rank, pick_priority DESC, pick_at, seq;

-- name: heartbeat
-- Renews the leases still held; never waits on a row lock (SKIP LOCKED): the holder may be a
-- transaction of a worker cut off from the network. A held job whose row is locked right now
-- is reported with its flags but not renewed (renewed = false); the next beat renews it.
WITH lease AS (
    SELECT * FROM unnest(%(ids)s::text[], %(tokens)s::text[], %(attempts)s::int[])
         AS lease (id, token, attempt)
), held AS (
    SELECT jobs.id FROM jobs JOIN lease ON jobs.id = lease.id
    WHERE jobs.state = 'running' AND jobs.lease_token = lease.token
      AND jobs.attempt = lease.attempt
), locked AS (
    SELECT id FROM jobs WHERE id IN (SELECT id FROM held)
    ORDER BY id
    FOR UPDATE SKIP LOCKED
), renewed AS (
    UPDATE jobs
    SET lease_expires_at = now() + %(lease_seconds)s::float8 * interval '1 second',
        updated_at = now()
    FROM locked JOIN lease ON lease.id = locked.id
    WHERE jobs.id = locked.id AND jobs.state = 'running'
      AND jobs.lease_token = lease.token AND jobs.attempt = lease.attempt
    RETURNING jobs.id, jobs.lease_token, jobs.pause_requested, jobs.cancel_requested
)
SELECT id, lease_token, pause_requested, cancel_requested, true AS renewed FROM renewed
UNION ALL
SELECT jobs.id, jobs.lease_token, jobs.pause_requested, jobs.cancel_requested, false
FROM jobs
WHERE jobs.id IN (SELECT id FROM held) AND jobs.id NOT IN (SELECT id FROM renewed);

-- name: save_progress
UPDATE jobs SET current_step = %(current_step)s, total_steps = %(total_steps)s,
                updated_at = now()
WHERE id = %(id)s AND state = 'running' AND lease_token = %(token)s AND attempt = %(attempt)s
RETURNING pause_requested, cancel_requested;

-- name: save_checkpoint
UPDATE jobs SET current_step = %(current_step)s, total_steps = %(total_steps)s,
                checkpoint = %(checkpoint)s, updated_at = now()
WHERE id = %(id)s AND state = 'running' AND lease_token = %(token)s AND attempt = %(attempt)s
RETURNING pause_requested, cancel_requested;

-- name: expired_leases
SELECT * FROM jobs WHERE state = 'running' AND lease_expires_at < now()
ORDER BY lease_expires_at LIMIT %(limit)s;

-- name: expired_pauses
-- A resume waiting for a free slot is not a pause any more: the pause timer does not apply.
SELECT * FROM jobs
WHERE state = 'paused' AND NOT resume_requested
  AND paused_at + pause_timeout * interval '1 second' < now()
ORDER BY paused_at LIMIT %(limit)s;
