-- Routing: the labels a task requires of its agent (a JSON object; '{}'
-- for none, so the claim's check costs one comparison for most tasks), and
-- the handler versions each agent session serves, per task type (a JSON
-- object of arrays), shown by ListAgents and used to prefer the agents
-- that serve a task's version exactly.
ALTER TABLE tasks ADD COLUMN required_labels JSONB NOT NULL DEFAULT '{}';
ALTER TABLE agents ADD COLUMN handler_versions TEXT NOT NULL DEFAULT '{}';
