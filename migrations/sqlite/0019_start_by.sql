-- Deadlines (#31): a task not started by `start_by` ends EXPIRED, a
-- terminal status, and never runs. Claims skip such tasks; the server
-- expires them in batches through the index below, which holds only the
-- pending tasks that carry a deadline.
ALTER TABLE tasks ADD COLUMN start_by INTEGER;

CREATE INDEX tasks_start_by ON tasks (start_by)
    WHERE status = 'pending' AND start_by IS NOT NULL;

-- EXPIRED is a finished state: counted in task_counts like DEAD and
-- CANCELLED (see 0007 and 0009 for the rest of the rules).
DROP TRIGGER task_counts_follow_finishes;

CREATE TRIGGER task_counts_follow_finishes AFTER UPDATE OF finished_at ON tasks
WHEN NEW.status IS NOT OLD.status AND NEW.status IS NOT 'completed'
     AND (NEW.status IN ('dead', 'cancelled', 'expired')
          OR OLD.status IN ('completed', 'dead', 'cancelled', 'expired'))
BEGIN
    INSERT INTO task_counts (task_type, status, second, count)
    SELECT NEW.task_type, NEW.status, coalesce(NEW.finished_at / 1000, 0), 1
    WHERE NEW.status IN ('dead', 'cancelled', 'expired')
    ON CONFLICT (task_type, status, second) DO UPDATE SET count = count + 1;
    INSERT INTO task_counts (task_type, status, second, count)
    SELECT OLD.task_type, OLD.status, 0, -1
    WHERE OLD.status IN ('completed', 'dead', 'cancelled', 'expired')
    ON CONFLICT (task_type, status, second) DO UPDATE SET count = count - 1;
END;

DROP TRIGGER task_counts_follow_deletes;

CREATE TRIGGER task_counts_follow_deletes AFTER DELETE ON tasks
WHEN OLD.status IN ('completed', 'dead', 'cancelled', 'expired')
BEGIN
    INSERT INTO task_counts (task_type, status, second, count)
    VALUES (OLD.task_type, OLD.status, 0, -1)
    ON CONFLICT (task_type, status, second) DO UPDATE SET count = count - 1;
END;
