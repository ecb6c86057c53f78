-- conveyor schema, version 3 (SQLite): unique jobs, paused queues, periodic schedules.
--
-- unique_key: at most one unfinished job (pending, running, paused, or failed with a retry
-- left) holds a key. The partial unique index is the guarantee: two processes racing to
-- enqueue one key cannot both insert, whatever they read before.
ALTER TABLE jobs ADD COLUMN unique_key TEXT;
CREATE UNIQUE INDEX jobs_unique_key ON jobs (unique_key)
    WHERE unique_key IS NOT NULL
      AND (state IN ('pending', 'running', 'paused')
           OR (state = 'failed' AND attempt < max_attempts));

-- A queue an operator paused: claims skip its jobs until it is resumed. One row per queue
-- ever paused, holding who changed it last, when and why.
CREATE TABLE queue_states (
    queue      TEXT    PRIMARY KEY,
    paused     INTEGER NOT NULL CHECK (paused IN (0, 1)),
    changed_at REAL    NOT NULL,
    actor      TEXT    NOT NULL DEFAULT '',
    reason     TEXT    NOT NULL DEFAULT ''
);

-- The periodic schedules workers run, as last registered (for listing without the app), and
-- one row per tick enqueued: the primary key (schedule, tick) is what makes a tick enqueue
-- exactly one job however many schedulers see it.
CREATE TABLE schedules (
    name       TEXT PRIMARY KEY,
    cron       TEXT NOT NULL,
    timezone   TEXT NOT NULL,
    job_type   TEXT NOT NULL,
    queue      TEXT,
    first_seen REAL NOT NULL,
    seen_at    REAL NOT NULL
);
CREATE TABLE schedule_ticks (
    schedule    TEXT NOT NULL,
    tick        REAL NOT NULL,
    job_id      TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    PRIMARY KEY (schedule, tick)
);
