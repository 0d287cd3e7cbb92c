-- The executor's own schema (search_path is set to it by the migrations runner).
-- One row per action id, claimed before the tool is called; its status only moves forward:
-- claimed -> running -> succeeded | failed | unknown.
CREATE TABLE actions (
    action_id text PRIMARY KEY,
    event_id text NOT NULL,            -- the authorization event that claimed it
    tenant_id text NOT NULL,
    task_id text NOT NULL,
    step integer NOT NULL DEFAULT 0,
    tool text NOT NULL,
    args jsonb NOT NULL,
    action_digest text NOT NULL,
    status text NOT NULL CHECK (status IN ('claimed', 'running', 'succeeded', 'failed', 'unknown')),
    result jsonb,
    error jsonb,
    attempts integer NOT NULL DEFAULT 0,
    duration_ms double precision NOT NULL DEFAULT 0,
    cost_usd double precision NOT NULL DEFAULT 0,
    owner text,                        -- executor process that last worked on it
    claimed_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX actions_unfinished ON actions (status) WHERE status IN ('claimed', 'running');
CREATE INDEX actions_by_task ON actions (tenant_id, task_id);
