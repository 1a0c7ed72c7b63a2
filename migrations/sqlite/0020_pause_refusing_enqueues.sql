-- A paused type may also refuse new tasks (`taskplane types pause
-- --refuse-enqueues`): while `paused` and `refuse_enqueues` are both set,
-- an enqueue of the type fails with FAILED_PRECONDITION and writes nothing.
ALTER TABLE task_types ADD COLUMN refuse_enqueues INTEGER NOT NULL DEFAULT 0;
