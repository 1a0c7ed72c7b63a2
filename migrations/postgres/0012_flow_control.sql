-- Flow control (server/src/engine/flow.rs): an operator's limits on a task
-- type. NULL limits nothing; `paused` delivers nothing new. The
-- concurrency key is a path such as 'payload.customer_id'.
ALTER TABLE task_types ADD COLUMN paused BIGINT NOT NULL DEFAULT 0;
ALTER TABLE task_types ADD COLUMN max_running BIGINT;
ALTER TABLE task_types ADD COLUMN concurrency_key TEXT;
ALTER TABLE task_types ADD COLUMN max_running_per_key BIGINT;
