-- The step-timeout sweep reads only open tasks; closed ones are most of the table.
CREATE INDEX tasks_open ON tasks (task_id) WHERE status IN ('running', 'waiting_human');
