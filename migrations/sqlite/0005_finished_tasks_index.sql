-- Finished tasks (completed, dead, cancelled: the only rows with a
-- finished_at) in the order they finished, for the retention purge. The
-- purge used to walk the primary key up to the cutoff's id, which visited
-- every task created before the cutoff that had not finished, on the
-- writer, at every purge: a backlog older than the retention was read in
-- full once a minute. With this index a purge reads only what it deletes.
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
