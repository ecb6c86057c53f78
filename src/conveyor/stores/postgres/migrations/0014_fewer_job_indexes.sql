-- conveyor schema (PostgreSQL): fewer index entries and one partial index less for each claim,
-- completion and enqueue.
--
-- Each update that changes a job's state (a claim, a completion: never a HOT update, since it
-- changes indexed columns) opens every index of jobs, prepares each partial index's predicate
-- again (PostgreSQL plans it from its stored tree in every statement that writes the table)
-- and inserts an entry into each index whose predicate the new row version meets; an enqueue
-- does the same. Counted with callgrind on a server running a one-slot worker (six
-- alternated runs each), a transaction (a completion and the next claim) cost about 1.40 M
-- instructions, after this migration about 1.36 M, and wrote about 100 bytes of WAL less
-- (2,278 -> 2,175 without full-page images); a one-job enqueue about 12,000 instructions less.
--
-- - jobs_state_seq (state, seq) no longer holds running jobs, as it holds no pending ones
--   since version 12: a claim does not write it. Running jobs are few (one per busy worker
--   slot) and jobs_lease holds them all: their list reads jobs_lease and sorts those rows by
--   seq; the store's lists of other states say `state NOT IN ('pending', 'running')`, so that
--   a prepared statement's generic plan may use this index.
-- - jobs_paused (paused_at) WHERE state = 'paused' AND NOT resume_requested and
--   jobs_resumable (queue, paused_at, seq) WHERE state = 'paused' AND resume_requested are one
--   index, jobs_paused (resume_requested, paused_at, seq) WHERE state = 'paused': the reaper's
--   pause timeouts read its resume_requested = false range by paused_at, a claim's resumable
--   jobs its resume_requested = true range by (paused_at, seq), the claim's order; a queue
--   filter is checked on those few rows instead of being part of the key.
--
-- docs/dashboard.md says which lists walk which index and what they cost.
DROP INDEX jobs_state_seq;
CREATE INDEX jobs_state_seq ON jobs (state, seq) WHERE state NOT IN ('pending', 'running');
DROP INDEX jobs_paused;
DROP INDEX jobs_resumable;
CREATE INDEX jobs_paused ON jobs (resume_requested, paused_at, seq) WHERE state = 'paused';
