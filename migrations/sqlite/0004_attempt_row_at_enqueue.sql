-- A task handed to an idle agent as it is enqueued is inserted RUNNING with
-- its lease (no claim follows), so its first attempt row is written here,
-- as 0003's trigger writes the rows of claimed tasks.
CREATE TRIGGER task_attempt_begins_at_enqueue AFTER INSERT ON tasks
WHEN NEW.status = 'running' AND NEW.lease_session IS NOT NULL
BEGIN
    INSERT INTO task_attempts (task_id, attempt, agent_id, session_id, started_at)
    VALUES (NEW.id, NEW.attempts, NEW.lease_agent, NEW.lease_session, NEW.started_at);
END;
