-- The labels a schedule's tasks require of their agent (JSON text, as the
-- schedule's metadata; '{}' for none).
ALTER TABLE schedules ADD COLUMN required_labels TEXT NOT NULL DEFAULT '{}';
