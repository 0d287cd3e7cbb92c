-- Whether a task's first request asked Tidegate's planner to plan it (`task.submitted` `planner` = `tidegate`): such a
-- task is its requester's alone, so no outside agent proposes in it, and a proposal of the planner naming another
-- requester than the one it learned means two requesters used the task id (docs/policy.md, "How a proposal is decided").
-- A task an outside agent plans is delegated by its requester to that agent, whose own key signs its proposals. Rows from
-- before this migration have none: they are decided as before.
ALTER TABLE tasks_learned ADD COLUMN planned_here boolean;
