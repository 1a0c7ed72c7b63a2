-- The feature flags each agent session registered with, shown by ListAgents
-- on every replica.
ALTER TABLE agents ADD COLUMN feature_flags TEXT NOT NULL DEFAULT '{}';
