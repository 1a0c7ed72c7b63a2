-- Set by DrainAgent on any replica; the replica that owns the session
-- drains it at its next lease-maintenance round.
ALTER TABLE agents ADD COLUMN drain_requested INTEGER NOT NULL DEFAULT 0;
