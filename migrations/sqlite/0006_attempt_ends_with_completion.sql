-- A batch of completions ends its attempt rows in the same statement that
-- completes the tasks, as 0003 begins them in the claim's: one statement
-- on the writer instead of a second one that reads the batch's JSON again.
-- Only leased tasks have attempt rows (the benchmark's limit row has none).
CREATE TRIGGER task_attempt_ends_completed AFTER UPDATE OF status ON tasks
WHEN OLD.status = 'running' AND NEW.status = 'completed'
     AND OLD.lease_session IS NOT NULL
BEGIN
    UPDATE task_attempts SET finished_at = NEW.finished_at, outcome = 'completed', error = NULL
    WHERE task_id = NEW.id AND attempt = NEW.attempts;
END;
