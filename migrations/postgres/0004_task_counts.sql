-- Finished tasks counted as they finish; see the SQLite migration 0007 for
-- why and for what `second` holds. Here the counts are deltas: each
-- statement that finishes, reopens or deletes tasks appends one row per
-- task type, status and second, and readers sum them. Appending takes no
-- row lock, so replicas completing tasks of the same type at the same time
-- never wait for each other's commit, as they would on one counter row.
-- The server folds the rows older than the recent window into one per
-- type and status every half minute, which keeps the table small.
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

-- Statement-level, with transition tables: one INSERT per statement, not
-- one per row, for a completion batch of a hundred tasks. Tasks are only
-- ever inserted PENDING or RUNNING, so a change of status and a delete are
-- the only ways in and out of the finished states.
CREATE FUNCTION task_counts_follow_updates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_counts (task_type, status, second, count)
    SELECT task_type, status, second, sum(delta) FROM (
        SELECT n.task_type, n.status, coalesce(n.finished_at / 1000, 0) AS second, 1 AS delta
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.status IN ('completed', 'dead', 'cancelled') AND n.status <> o.status
        UNION ALL
        SELECT o.task_type, o.status, 0, -1
        FROM old_rows o JOIN new_rows n ON n.id = o.id
        WHERE o.status IN ('completed', 'dead', 'cancelled') AND n.status <> o.status
    ) AS changes
    GROUP BY task_type, status, second;
    RETURN NULL;
END $$;

CREATE FUNCTION task_counts_follow_deletes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_counts (task_type, status, second, count)
    SELECT task_type, status, 0, -count(*) FROM old_rows
    WHERE status IN ('completed', 'dead', 'cancelled')
    GROUP BY task_type, status;
    RETURN NULL;
END $$;

CREATE TRIGGER task_counts_updated AFTER UPDATE ON tasks
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION task_counts_follow_updates();

CREATE TRIGGER task_counts_deleted AFTER DELETE ON tasks
REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION task_counts_follow_deletes();
