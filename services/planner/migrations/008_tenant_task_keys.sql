-- A task id is its tenant's, not the deployment's: the policy and the approval service key tasks by (tenant, task), and
-- the planner now does too. Keyed by the task id alone, a task another tenant submitted first under the same id (a
-- ticket number, `T-1001`) left this tenant's task unplanned and unanswered (docs/planner.md, "Task ids").
-- Existing rows keep their tenant: `tasks.tenant_id` has always been written, and each step takes its task's.
-- Building the keys locks `tasks` and `steps` while their indexes are made: on a large table, run it in a quiet hour.
ALTER TABLE steps DROP CONSTRAINT steps_task_id_fkey;
ALTER TABLE steps DROP CONSTRAINT steps_pkey;
ALTER TABLE steps ADD COLUMN tenant_id text;
UPDATE steps s SET tenant_id = t.tenant_id FROM tasks t WHERE t.task_id = s.task_id;
ALTER TABLE steps ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE tasks DROP CONSTRAINT tasks_pkey;
ALTER TABLE tasks ADD PRIMARY KEY (tenant_id, task_id);
ALTER TABLE steps ADD PRIMARY KEY (tenant_id, task_id, step);
ALTER TABLE steps ADD FOREIGN KEY (tenant_id, task_id) REFERENCES tasks (tenant_id, task_id);
-- Applied events and outbox entries are found by event id (an envelope's id, or the step-timeout sweep's, which now names
-- the tenant); their task is there for people reading with psql, now with its tenant. Rows from before carry none: an
-- outbox entry lives until the broker has it, an applied id until `applied_events_kept_s` (no rewrite of either table).
ALTER TABLE processed_events ADD COLUMN tenant_id text;
ALTER TABLE outbox ADD COLUMN tenant_id text;
