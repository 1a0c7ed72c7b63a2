-- taskplane schema for SQLite. Times are Unix milliseconds (UTC): compact,
-- and they order correctly as integers. JSON columns hold serde_json text.

CREATE TABLE task_types (
    task_type            TEXT PRIMARY KEY NOT NULL,
    domain               TEXT NOT NULL,
    description          TEXT NOT NULL DEFAULT '',
    versions             TEXT NOT NULL DEFAULT '[]',
    capabilities         TEXT NOT NULL DEFAULT '[]',
    default_max_attempts INTEGER NOT NULL,
    default_timeout_ms   INTEGER NOT NULL,
    retry_initial_ms     INTEGER NOT NULL,
    retry_factor         REAL NOT NULL,
    retry_max_ms         INTEGER NOT NULL,
    registered_at        INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
);

CREATE INDEX task_types_domain ON task_types (domain);

CREATE TABLE tasks (
    id               TEXT PRIMARY KEY NOT NULL, -- UUIDv7: time-ordered, so inserts append
    task_type        TEXT NOT NULL REFERENCES task_types (task_type),
    domain           TEXT NOT NULL,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL,             -- pending | running | completed | dead | cancelled
    priority         INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    timeout_ms       INTEGER NOT NULL,
    retry_initial_ms INTEGER NOT NULL,
    retry_factor     REAL NOT NULL,
    retry_max_ms     INTEGER NOT NULL,
    run_at           INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    result           TEXT,
    last_error       TEXT,
    idempotency_key  TEXT,
    handler_version  TEXT NOT NULL DEFAULT '',
    metadata         TEXT NOT NULL DEFAULT '{}',
    lease_session    TEXT,
    lease_agent      TEXT,
    lease_expires_at INTEGER
) WITHOUT ROWID;

-- The ready scan: only PENDING rows, in delivery order. The state is written
-- literally: a bound parameter would keep the planner from using the index.
CREATE INDEX tasks_ready ON tasks (task_type, priority DESC, run_at, id)
    WHERE status = 'pending';

-- Leases to extend, release or reap: only RUNNING rows.
CREATE INDEX tasks_leased ON tasks (lease_session, lease_expires_at)
    WHERE status = 'running';

-- Idempotency keys are unique per task type.
CREATE UNIQUE INDEX tasks_idempotency ON tasks (task_type, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE INDEX tasks_by_type ON tasks (task_type, id);

CREATE TABLE task_attempts (
    task_id     TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    agent_id    TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    outcome     TEXT,                           -- completed | failed | lost | cancelled
    error       TEXT,
    PRIMARY KEY (task_id, attempt)
) WITHOUT ROWID;

-- Agent sessions of every replica. The owning replica refreshes status and
-- last_seen_at every heartbeat interval; a replica that dies stops, so its
-- sessions fall out of ListAgents after one lease.
CREATE TABLE agents (
    session_id       TEXT PRIMARY KEY NOT NULL,
    agent_id         TEXT NOT NULL,
    agent_name       TEXT NOT NULL,
    domains          TEXT NOT NULL,
    task_types       TEXT NOT NULL,
    labels           TEXT NOT NULL,
    connected_at     INTEGER NOT NULL,
    last_seen_at     INTEGER NOT NULL,
    disconnected_at  INTEGER,
    status           TEXT NOT NULL
);

CREATE INDEX agents_live ON agents (last_seen_at) WHERE disconnected_at IS NULL;
