-- conveyor schema (SQLite): fewer index entries written by each enqueue and each claim.
--
-- Every insert writes the table and each of its indexes (a partial one only when the row is
-- in it); a claim moves the job's entry in each index holding its state. Counted with
-- callgrind, SQLite's own work for one enqueue (BEGIN, the job, its create row, COMMIT) was
-- about 220,000 instructions, of which each index of the jobs table cost about 25,000 (its
-- page found, changed, and written to the WAL at the commit).
--
-- - jobs_type_seq (job_type, seq) and jobs_queue_seq (queue, seq) served one read each: a
--   list of one type's or one queue's jobs, newest first. Neither changes when a job changes
--   state, so they cost every enqueue and nothing else. They are gone: such a list walks the
--   table newest first and stops at its page, at once for a common type or queue; a queue's
--   jobs in one state are still read in order from jobs_queue_state (its entries are
--   (queue, state, seq)).
-- - jobs_state_seq (state, seq) no longer holds pending jobs: an enqueue does not write it,
--   and a claim only adds the running entry (it moved the job from the pending part). Pending
--   jobs are counted from jobs_queue_state and listed by walking the table newest first,
--   where the newest jobs are (the store's list says `state = ?` for one state and adds
--   `state <> 'pending'` when pending is not asked for, so that SQLite uses this index).
--
-- docs/dashboard.md says which lists walk the table and what they cost.
DROP INDEX jobs_type_seq;
DROP INDEX jobs_queue_seq;
DROP INDEX jobs_state_seq;
CREATE INDEX jobs_state_seq ON jobs (state, seq) WHERE state <> 'pending';
