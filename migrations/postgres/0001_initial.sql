-- taskplane schema for PostgreSQL. Times are Unix milliseconds (BIGINT), as in
-- the SQLite schema, so both backends share their row decoding; payloads,
-- results and metadata are jsonb.

CREATE TABLE task_types (
    task_type            TEXT PRIMARY KEY,
    domain               TEXT NOT NULL,
    description          TEXT NOT NULL DEFAULT '',
    versions             TEXT NOT NULL DEFAULT '[]',
    capabilities         TEXT NOT NULL DEFAULT '[]',
    default_max_attempts BIGINT NOT NULL,
    default_timeout_ms   BIGINT NOT NULL,
    retry_initial_ms     BIGINT NOT NULL,
    retry_factor         DOUBLE PRECISION NOT NULL,
    retry_max_ms         BIGINT NOT NULL,
    registered_at        BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);

CREATE INDEX task_types_domain ON task_types (domain);

-- Rows change state several times (pending → running → completed): a
-- fillfactor of 70 leaves room on each page for HOT updates, which need no
-- index maintenance, and aggressive autovacuum settings keep the dead tuples
-- of a high-churn queue from piling up between vacuums.
CREATE TABLE tasks (
    id               UUID PRIMARY KEY,
    task_type        TEXT NOT NULL REFERENCES task_types (task_type),
    domain           TEXT NOT NULL,
    payload          JSONB NOT NULL,
    status           TEXT NOT NULL,
    priority         BIGINT NOT NULL DEFAULT 0,
    attempts         BIGINT NOT NULL DEFAULT 0,
    max_attempts     BIGINT NOT NULL,
    timeout_ms       BIGINT NOT NULL,
    retry_initial_ms BIGINT NOT NULL,
    retry_factor     DOUBLE PRECISION NOT NULL,
    retry_max_ms     BIGINT NOT NULL,
    run_at           BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    result           JSONB,
    last_error       TEXT,
    idempotency_key  TEXT,
    handler_version  TEXT NOT NULL DEFAULT '',
    metadata         JSONB NOT NULL DEFAULT '{}',
    lease_session    TEXT,
    lease_agent      TEXT,
    lease_expires_at BIGINT
) WITH (
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.05
);

-- The ready scan: only PENDING rows, in delivery order. The state is written
-- literally: a bound parameter would keep the planner from using the index.
CREATE INDEX tasks_ready ON tasks (task_type, priority DESC, run_at, id) WHERE status = 'pending';
CREATE INDEX tasks_leased ON tasks (lease_session, lease_expires_at) WHERE status = 'running';
CREATE UNIQUE INDEX tasks_idempotency ON tasks (task_type, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX tasks_by_type ON tasks (task_type, id);

CREATE TABLE task_attempts (
    task_id     TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    agent_id    TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    outcome     TEXT,
    error       TEXT,
    PRIMARY KEY (task_id, attempt)
);

-- Agent sessions of every replica; see the SQLite schema.
CREATE TABLE agents (
    session_id       TEXT PRIMARY KEY,
    agent_id         TEXT NOT NULL,
    agent_name       TEXT NOT NULL,
    domains          TEXT NOT NULL,
    task_types       TEXT NOT NULL,
    labels           TEXT NOT NULL,
    connected_at     BIGINT NOT NULL,
    last_seen_at     BIGINT NOT NULL,
    disconnected_at  BIGINT,
    status           TEXT NOT NULL
);

CREATE INDEX agents_live ON agents (last_seen_at) WHERE disconnected_at IS NULL;
