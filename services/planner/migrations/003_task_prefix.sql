-- The deployment (topic prefix) that runs each task: the step-timeout sweep of one deployment never
-- closes another's tasks when they share a database (a sandbox, tests). Earlier rows belong to ''.
ALTER TABLE tasks ADD COLUMN topic_prefix text NOT NULL DEFAULT '';
DROP INDEX tasks_open;
CREATE INDEX tasks_open ON tasks (topic_prefix) WHERE status IN ('running', 'waiting_human');
