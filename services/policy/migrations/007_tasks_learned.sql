-- The tasks whose request (`tasks`) this service has learned: what it vouches for and what its untrusted fields
-- carry. A proposal the planner signed names a task the planner read from `tasks`; until that task is here, what
-- its untrusted fields carry is unknown, so the proposal waits for it (`provenance_wait_s`) and is then decided
-- with every outside counterparty tainted (docs/governance.md; docs/security.md, the attacks table).
CREATE TABLE tasks_learned (
    tenant_id text NOT NULL,
    task_id text NOT NULL,
    learned_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, task_id)
);
