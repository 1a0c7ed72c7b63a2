-- The labels a schedule's tasks require of their agent (a JSON object, as
-- tasks.required_labels; '{}' for none).
ALTER TABLE schedules ADD COLUMN required_labels TEXT NOT NULL DEFAULT '{}';
