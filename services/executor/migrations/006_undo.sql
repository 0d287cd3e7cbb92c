-- What undoing each succeeded call needs (docs/autonomy.md): the state read right before the call (for a
-- tool whose catalog `undo` has a `before` read), kept before the call so that a retry after a crash
-- restores what was there first; and the plan computed when the call succeeded.
CREATE TABLE undo_plans (
    action_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    task_id text NOT NULL,
    tool text NOT NULL,
    before jsonb,
    plan jsonb,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    planned_at timestamptz
);
CREATE INDEX undo_plans_by_task ON undo_plans (tenant_id, task_id);
