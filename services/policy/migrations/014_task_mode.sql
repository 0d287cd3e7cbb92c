-- The mode a task's request asked for (`task.submitted`, signed by the requester's client): a proposal of the task is
-- decided in the stricter of it and the proposal's own mode, so the planner (whose state its database login can rewrite)
-- cannot lift a draft task to autonomous. A second request of the same task can only make it stricter. Rows from before
-- this migration have none, and are decided as draft (the strictest). docs/policy.md, "Mode".
ALTER TABLE tasks_learned ADD COLUMN mode text CHECK (mode IN ('draft', 'autonomous'));
