-- Finished tasks counted as they finish, so queue statistics and the
-- metrics scrape read a few rows per task type instead of counting every
-- finished task kept in history (4.2–4.4 s a call over 2,000,000 of them).
-- PENDING and RUNNING are still counted from their partial indexes: what
-- is live is bounded by the backlog, history is not.
--
-- `second` is the Unix second the tasks finished in, so the last minute's
-- completions and deaths are a sum over recent buckets; 0 holds what is
-- older (the server folds buckets into it every half minute) and every
-- decrement. A decrement (a finished task retried or purged) never touches
-- a recent bucket: a completion that happened still happened.
CREATE TABLE task_counts (
    task_type TEXT NOT NULL,
    status    TEXT NOT NULL,    -- completed | dead | cancelled
    second    INTEGER NOT NULL,
    count     INTEGER NOT NULL,
    PRIMARY KEY (task_type, status, second)
) WITHOUT ROWID;

INSERT INTO task_counts (task_type, status, second, count)
SELECT task_type, status, 0, count(*) FROM tasks
WHERE status IN ('completed', 'dead', 'cancelled')
GROUP BY task_type, status;

-- Into a finished state and out of one. The trigger watches `finished_at`,
-- which is set exactly when a task enters a finished state and cleared when
-- it leaves one, so claims never run it. Counting costs each completion
-- about 3 µs on the writer (an upsert from a row trigger); counting once per
-- batch in the completing statement's transaction cost as much, in trips
-- through the writer thread (see docs/performance.md, ninth stop).
CREATE TRIGGER task_counts_follow_finishes AFTER UPDATE OF finished_at ON tasks
WHEN NEW.status IS NOT OLD.status
     AND (NEW.status IN ('completed', 'dead', 'cancelled')
          OR OLD.status IN ('completed', 'dead', 'cancelled'))
BEGIN
    INSERT INTO task_counts (task_type, status, second, count)
    SELECT NEW.task_type, NEW.status, coalesce(NEW.finished_at / 1000, 0), 1
    WHERE NEW.status IN ('completed', 'dead', 'cancelled')
    ON CONFLICT (task_type, status, second) DO UPDATE SET count = count + 1;
    INSERT INTO task_counts (task_type, status, second, count)
    SELECT OLD.task_type, OLD.status, 0, -1
    WHERE OLD.status IN ('completed', 'dead', 'cancelled')
    ON CONFLICT (task_type, status, second) DO UPDATE SET count = count - 1;
END;

-- The retention purge.
CREATE TRIGGER task_counts_follow_deletes AFTER DELETE ON tasks
WHEN OLD.status IN ('completed', 'dead', 'cancelled')
BEGIN
    INSERT INTO task_counts (task_type, status, second, count)
    VALUES (OLD.task_type, OLD.status, 0, -1)
    ON CONFLICT (task_type, status, second) DO UPDATE SET count = count - 1;
END;
