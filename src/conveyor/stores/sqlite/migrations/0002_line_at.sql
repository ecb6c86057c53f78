-- conveyor schema, version 2 (SQLite): a job's place in line, and a pause timer that spares
-- resumed jobs.
--
-- line_at is when the job joined the queue: its run_at at enqueue. Claims order pending jobs
-- by (priority DESC, line_at, seq); run_at stays the not-before time. A retry after a lost
-- worker only moves run_at (the backoff), so an interrupted job is not sent behind the
-- backlog enqueued after it; a retry after the job raised moves line_at too (the back of the
-- line). Existing jobs keep the order they had: line_at = run_at.
ALTER TABLE jobs ADD COLUMN line_at REAL NOT NULL DEFAULT 0;
UPDATE jobs SET line_at = run_at;

DROP INDEX jobs_pending_any;
DROP INDEX jobs_pending_queue;
CREATE INDEX jobs_pending_any   ON jobs (priority DESC, line_at, seq) WHERE state = 'pending';
CREATE INDEX jobs_pending_queue ON jobs (queue, priority DESC, line_at, seq)
    WHERE state = 'pending';

-- The reaper's pause-timeout question skips jobs whose resume is waiting for a slot.
DROP INDEX jobs_paused;
CREATE INDEX jobs_paused ON jobs (paused_at) WHERE state = 'paused' AND resume_requested = 0;
