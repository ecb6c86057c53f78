-- conveyor schema (SQLite): two fewer indexes on jobs, so each enqueue writes two fewer
-- B-trees.
--
-- Every insert writes the table and each of its indexes (a partial one only when the row is
-- in it). Counted with callgrind, SQLite's own work for one enqueue (BEGIN, the job, its
-- create row, COMMIT) is about 220,000 instructions, of which each index of the jobs table
-- costs about 25,000 (its page found, changed, and written to the WAL at the commit).
--
-- jobs_type_seq (job_type, seq) and jobs_queue_seq (queue, seq) served one read each: a list
-- of one type's or one queue's jobs, newest first. Neither changes when a job changes state,
-- so they cost every enqueue and nothing else. A list walks the table newest first instead
-- and stops at its page, at once when the type or queue is a common one; a queue's jobs in
-- one state are still read from jobs_queue_state in order (its entries are (queue, state,
-- seq)). A type or queue with few jobs among many others is found by walking the table
-- further (docs/dashboard.md).
DROP INDEX jobs_type_seq;
DROP INDEX jobs_queue_seq;
