-- A paused type may also refuse new tasks (`taskplane types pause
-- --refuse-enqueues`): while `paused` and `refuse_enqueues` are both set,
-- an enqueue of the type fails with FAILED_PRECONDITION and writes nothing.
-- The enqueue's INSERT compares it with what the replica remembered of the
-- type (see writes::insert_tasks), so a replica never accepts a task on a
-- stale view of the pause.
ALTER TABLE task_types ADD COLUMN refuse_enqueues BIGINT NOT NULL DEFAULT 0;
