-- conveyor schema (PostgreSQL): job_history without its foreign key to jobs, and with one
-- index instead of two.
--
-- Every enqueue and every worker transaction writes history rows, and each row paid for:
-- - the foreign key: a query for the job's row, a share lock on it and a WAL record of that
--   lock (about 10 us of server time per row, a fifth of a COPY batch's storing). It guarded
--   nothing the statements do not already: every history row is written by the statement that
--   inserts or updates its job (a CTE over the jobs rows it wrote and holds locked until
--   commit, or the COPY of the jobs just inserted in the same transaction), so no row can name
--   a job that is not there. Deletes went with ON DELETE CASCADE; retention (prune_jobs) now
--   deletes a job's history in the same statement as the job.
-- - two indexes: the primary key on id, which nothing reads by, and job_history_job on
--   (job_id, id), which a job's history and that delete read. The primary key is now
--   (job_id, id) itself (id alone is unique already: an identity), so one index serves both.
-- Building the new key reads the whole table once: on a large history the migration takes
-- that long, holding the table's lock.
ALTER TABLE job_history
    DROP CONSTRAINT job_history_job_id_fkey,
    DROP CONSTRAINT job_history_pkey,
    ADD CONSTRAINT job_history_pkey PRIMARY KEY (job_id, id);
DROP INDEX job_history_job;
