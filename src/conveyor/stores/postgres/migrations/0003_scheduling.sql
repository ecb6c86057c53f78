-- conveyor schema, version 3 (PostgreSQL): unique jobs, paused queues, periodic schedules.
--
-- unique_key: at most one unfinished job (pending, running, paused, or failed with a retry
-- left) holds a key. The partial unique index is the guarantee: two processes racing to
-- enqueue one key cannot both insert, whatever they read before.
ALTER TABLE jobs ADD COLUMN unique_key text;
CREATE UNIQUE INDEX jobs_unique_key ON jobs (unique_key)
    WHERE unique_key IS NOT NULL
      AND (state IN ('pending', 'running', 'paused')
           OR (state = 'failed' AND attempt < max_attempts));

-- A queue an operator paused: claims skip its jobs until it is resumed. One row per queue
-- ever paused, holding who changed it last, when and why.
CREATE TABLE queue_states (
    queue      text        PRIMARY KEY,
    paused     boolean     NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    actor      text        NOT NULL DEFAULT '',
    reason     text        NOT NULL DEFAULT ''
);

-- The periodic schedules workers run, as last registered (for listing without the app), and
-- one row per tick enqueued: the primary key (schedule, tick) is what makes a tick enqueue
-- exactly one job however many schedulers see it.
CREATE TABLE schedules (
    name       text        PRIMARY KEY,
    cron       text        NOT NULL,
    timezone   text        NOT NULL,
    job_type   text        NOT NULL,
    queue      text,
    first_seen timestamptz NOT NULL DEFAULT now(),
    seen_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE schedule_ticks (
    schedule    text        NOT NULL,
    tick        timestamptz NOT NULL,
    job_id      text        NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, tick)
);
