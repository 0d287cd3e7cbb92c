-- The succeeded calls whose catalog entry declares an undo (the result carries the executor's plan), so
-- an approver can propose the undo through the API (docs/autonomy.md). One row per action id.
CREATE TABLE undo_results (
    action_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    task_id text NOT NULL,
    result jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
