-- conveyor schema (SQLite): fewer index entries written by each claim and each completion.
--
-- A claim moves a job from pending to running and a completion from running to a finished
-- state; each writes (deletes, inserts) the job's entry in every index that holds it before or
-- after. Until now a claim wrote four index entries beside the row (the two claim indexes'
-- deleted, jobs_lease's and jobs_state_seq's added, jobs_queue_state's moved) and a
-- completion four (jobs_lease's deleted, jobs_state_seq's and jobs_queue_state's moved,
-- jobs_finished's added), each a B-tree page changed and written to the WAL at the commit.
--
-- - jobs_state_seq (state, seq) no longer holds running jobs, as it holds no pending ones
--   since version 11: a claim does not write it, a completion only adds the finished entry.
--   Running jobs are few (one per busy worker slot) and jobs_lease holds them all: their list
--   reads their seqs from it and the rows in seq order (PostgreSQL's version 14 did the same).
-- - jobs_queue_state (queue, state) holds neither pending nor running jobs: an enqueue and a
--   claim do not write it, a completion only adds the finished entry. Counts by state and by
--   queue read each state from the index that holds it: pending jobs ready to run from the
--   claim's indexes (jobs_pending_any, jobs_pending_queue, keyed by queue), pending jobs
--   waiting on a dependency from jobs_waiting below (written only for jobs enqueued with
--   dependencies, and left when the last one completes), running ones from jobs_lease.
--
-- The statements that read these indexes say their WHERE term for term (`state <> 'pending'
-- AND state <> 'running'`): SQLite uses a partial index only when the query's WHERE implies
-- the index's, and it matches terms, not what they mean. docs/dashboard.md says which lists
-- and counts read which index.
DROP INDEX jobs_state_seq;
CREATE INDEX jobs_state_seq ON jobs (state, seq) WHERE state <> 'pending' AND state <> 'running';
DROP INDEX jobs_queue_state;
CREATE INDEX jobs_queue_state ON jobs (queue, state)
    WHERE state <> 'pending' AND state <> 'running';
CREATE INDEX jobs_waiting ON jobs (queue) WHERE state = 'pending' AND waiting_on > 0;
