-- Schedules: recurring work. `next_fire_at` is the next fire time; a firing
-- advances it (and `version`) in the same transaction that enqueues the
-- fire time's task, conditional on `version`, so each fire time makes at
-- most one task. Times are Unix milliseconds.
CREATE TABLE schedules (
    name             TEXT PRIMARY KEY,
    task_type        TEXT NOT NULL REFERENCES task_types (task_type),
    payload          TEXT NOT NULL,
    metadata         TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    max_attempts     INTEGER,
    timeout_ms       INTEGER,
    handler_version  TEXT NOT NULL,
    cron             TEXT,
    interval_ms      INTEGER,
    timezone         TEXT NOT NULL,
    jitter_ms        INTEGER NOT NULL,
    overlap          TEXT NOT NULL,
    catch_up         TEXT NOT NULL,
    catch_up_limit   INTEGER NOT NULL,
    declared_by      TEXT NOT NULL,
    revision         INTEGER NOT NULL,
    paused           INTEGER NOT NULL,
    next_fire_at     INTEGER NOT NULL,
    buffered_fire_at INTEGER,
    last_task_id     TEXT,
    version          INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

-- What the scheduler polls: active schedules by next fire time, and the
-- few holding a fire time for their previous run to finish. Both are
-- probes of a partial index, so a round that finds nothing due costs the
-- same with a thousand schedules as with none.
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE paused = 0;
CREATE INDEX schedules_buffered ON schedules (name) WHERE buffered_fire_at IS NOT NULL;

-- What each fire time did: the task it enqueued, or why it was skipped.
CREATE TABLE schedule_runs (
    schedule    TEXT NOT NULL REFERENCES schedules (name) ON DELETE CASCADE,
    fire_at     INTEGER NOT NULL,
    task_id     TEXT,
    skipped     TEXT,
    fire_times  INTEGER NOT NULL,
    triggered   INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (schedule, fire_at, triggered)
);
