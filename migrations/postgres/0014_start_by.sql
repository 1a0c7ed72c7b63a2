-- Deadlines (#31): a task not started by `start_by` ends EXPIRED, a
-- terminal status, and never runs. Claims skip such tasks; the server
-- expires them in batches through the index below, which holds only the
-- pending tasks that carry a deadline.
ALTER TABLE tasks ADD COLUMN start_by BIGINT;

CREATE INDEX tasks_start_by ON tasks (start_by)
    WHERE status = 'pending' AND start_by IS NOT NULL;

-- EXPIRED is a finished state: counted in task_counts like DEAD and
-- CANCELLED (see 0004 for the rest of the rules).
CREATE OR REPLACE FUNCTION task_counts_follow_finishes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('dead', 'cancelled', 'expired') THEN
        INSERT INTO task_counts (task_type, status, second, count)
        VALUES (NEW.task_type, NEW.status, coalesce(NEW.finished_at / 1000, 0), 1);
    END IF;
    IF OLD.status IN ('completed', 'dead', 'cancelled', 'expired') THEN
        INSERT INTO task_counts (task_type, status, second, count)
        VALUES (OLD.task_type, OLD.status, 0, -1);
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER task_counts_follow_finishes ON tasks;

CREATE TRIGGER task_counts_follow_finishes AFTER UPDATE OF finished_at ON tasks
FOR EACH ROW
WHEN (NEW.status IS DISTINCT FROM OLD.status
      AND (NEW.status IN ('dead', 'cancelled', 'expired')
           OR OLD.status IN ('completed', 'dead', 'cancelled', 'expired')))
EXECUTE FUNCTION task_counts_follow_finishes();

CREATE OR REPLACE FUNCTION task_counts_follow_deletes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_counts (task_type, status, second, count)
    SELECT task_type, status, 0, -count(*) FROM old_rows
    WHERE status IN ('completed', 'dead', 'cancelled', 'expired')
    GROUP BY task_type, status;
    RETURN NULL;
END $$;
