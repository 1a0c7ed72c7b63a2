-- A rate limit per key (server/src/engine/admission.rs): with
-- `rate_limit_key` set, `rate_limit` holds for each value of that key, and
-- each key's token bucket is a row here. A key without a row has a full
-- bucket; rows are written when tokens are spent, and deleted once their
-- bucket has had time to fill again. Claims of the type hold its
-- task_types row, so the buckets of one type change one claim at a time.
ALTER TABLE task_types ADD COLUMN rate_limit_key TEXT;

CREATE TABLE rate_buckets (
    task_type   TEXT NOT NULL REFERENCES task_types (task_type),
    key         TEXT NOT NULL,
    tokens      DOUBLE PRECISION NOT NULL,
    refilled_at BIGINT NOT NULL,
    PRIMARY KEY (task_type, key)
);
