-- A claim writes its attempt rows in the same statement that leases the
-- tasks (PostgreSQL does this with a data-modifying CTE), so a claim of one
-- type is one autocommit statement: one trip through SQLite's writer thread
-- instead of BEGIN, UPDATE, INSERT and COMMIT.
CREATE TRIGGER task_attempt_begins AFTER UPDATE OF attempts ON tasks
WHEN NEW.status = 'running' AND NEW.attempts = OLD.attempts + 1
     AND NEW.lease_session IS NOT NULL
BEGIN
    INSERT INTO task_attempts (task_id, attempt, agent_id, session_id, started_at)
    VALUES (NEW.id, NEW.attempts, NEW.lease_agent, NEW.lease_session, NEW.started_at);
END;
