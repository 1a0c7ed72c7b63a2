-- Flow control (server/src/engine/flow.rs): an operator's limits on a task
-- type. NULL limits nothing; `paused` delivers nothing new. The
-- concurrency key is a path such as 'payload.customer_id'.
ALTER TABLE task_types ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
ALTER TABLE task_types ADD COLUMN max_running INTEGER;
ALTER TABLE task_types ADD COLUMN concurrency_key TEXT;
ALTER TABLE task_types ADD COLUMN max_running_per_key INTEGER;
-- A rate limit: at most rate_limit starts per rate_window_ms, refilled
-- smoothly (a token bucket whose tokens and last refill are kept here, so
-- every claim, replica and restart shares them).
ALTER TABLE task_types ADD COLUMN rate_limit INTEGER;
ALTER TABLE task_types ADD COLUMN rate_window_ms INTEGER;
ALTER TABLE task_types ADD COLUMN rate_tokens REAL NOT NULL DEFAULT 0;
ALTER TABLE task_types ADD COLUMN rate_refilled_at INTEGER NOT NULL DEFAULT 0;
