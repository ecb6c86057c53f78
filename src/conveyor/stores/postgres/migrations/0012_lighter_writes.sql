-- conveyor schema (PostgreSQL): fewer index entries and no re-read row checks on job_history
-- for each enqueue and each worker transaction.
--
-- Counted with callgrind in a single-user server running the prepared insert_job statement,
-- one enqueue cost the server about 724,000 instructions; after this migration about 578,000.
--
-- - The two CHECKs of job_history (from_state and to_state each one of the six states) cost
--   about 105,000 of them: PostgreSQL reads a table's CHECK expressions back from their stored
--   text and plans them again in every statement that writes the table (the text of these
--   two is 1.4 KB each), and every enqueue and every worker transaction writes history rows.
--   They guarded nothing the statements do not already: each history row's states are the
--   old and new state of the jobs row the same statement wrote (which jobs_row_valid checks),
--   the known constant of a claim's source, or NULL for a creation; a COPY batch's rows say
--   'pending', as the jobs they log.
-- - jobs_type_seq (job_type, seq) and jobs_queue_seq (queue, seq) served one read each, a
--   list of one type's or one queue's jobs, newest first, and cost an index entry in every
--   enqueue, and in every claim and completion (an update that changes an indexed column, as
--   a change of state does, writes a new entry in each index). Such a list walks jobs_seq_key
--   newest first and stops at its page, at once for a common type or queue; a queue's jobs in
--   some states are counted from jobs_queue_state. As SQLite's migration 0011 did.
-- - jobs_state_seq (state, seq) no longer holds pending jobs: an enqueue does not write it.
--   Pending jobs are the newest: their list walks jobs_seq_key newest first; the store's list
--   of other states says `state <> 'pending'`, so that a prepared statement's generic plan
--   may use this index.
--
-- docs/dashboard.md says which lists walk the table and what they cost.
ALTER TABLE job_history
    DROP CONSTRAINT job_history_from_state_check,
    DROP CONSTRAINT job_history_to_state_check;
DROP INDEX jobs_type_seq;
DROP INDEX jobs_queue_seq;
DROP INDEX jobs_state_seq;
CREATE INDEX jobs_state_seq ON jobs (state, seq) WHERE state <> 'pending';
