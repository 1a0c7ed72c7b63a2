-- A running task's latest progress report (a JSON object: fraction,
-- message, reported_at), shown by GetTask and WatchTask.
ALTER TABLE tasks ADD COLUMN progress TEXT;
