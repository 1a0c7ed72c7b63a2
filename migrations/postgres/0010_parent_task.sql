-- The task whose handler enqueued this one (a follow-up), if any.
ALTER TABLE tasks ADD COLUMN parent_id UUID;
