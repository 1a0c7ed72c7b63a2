-- Finished tasks counted as they finish; see the SQLite migration 0007 for
-- why, for what `second` holds, and for which statements count what
-- (completions count themselves; the triggers below count the rest). Here
-- the counts are deltas: each change appends a row and readers sum them.
-- Appending takes no row lock, so replicas finishing tasks of the same
-- type at the same time never wait for each other's commit, as they would
-- on one counter row. The server folds the rows older than the recent
-- window into one per type and status every half minute, which keeps the
-- table small.
CREATE TABLE task_counts (
    task_type TEXT NOT NULL,
    status    TEXT NOT NULL,
    second    BIGINT NOT NULL,
    count     BIGINT NOT NULL
);

INSERT INTO task_counts (task_type, status, second, count)
SELECT task_type, status, 0, count(*) FROM tasks
WHERE status IN ('completed', 'dead', 'cancelled')
GROUP BY task_type, status;

-- Deaths and cancellations in, retries out. A row trigger whose WHEN is
-- checked before any function runs: claims do not set `finished_at`, and
-- completions fail the WHEN, so the hot path never calls it.
CREATE FUNCTION task_counts_follow_finishes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IN ('dead', 'cancelled') THEN
        INSERT INTO task_counts (task_type, status, second, count)
        VALUES (NEW.task_type, NEW.status, coalesce(NEW.finished_at / 1000, 0), 1);
    END IF;
    IF OLD.status IN ('completed', 'dead', 'cancelled') THEN
        INSERT INTO task_counts (task_type, status, second, count)
        VALUES (OLD.task_type, OLD.status, 0, -1);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER task_counts_follow_finishes AFTER UPDATE OF finished_at ON tasks
FOR EACH ROW
WHEN (NEW.status IS DISTINCT FROM OLD.status
      AND (NEW.status IN ('dead', 'cancelled') OR OLD.status IN ('completed', 'dead', 'cancelled')))
EXECUTE FUNCTION task_counts_follow_finishes();

-- The retention purge: one INSERT per statement, over its transition table.
CREATE FUNCTION task_counts_follow_deletes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_counts (task_type, status, second, count)
    SELECT task_type, status, 0, -count(*) FROM old_rows
    WHERE status IN ('completed', 'dead', 'cancelled')
    GROUP BY task_type, status;
    RETURN NULL;
END $$;

CREATE TRIGGER task_counts_follow_deletes AFTER DELETE ON tasks
REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION task_counts_follow_deletes();
