-- The planner service's own schema (search_path is set to it by the migrations runner).

-- One row per task our planner runs; `state` is the whole TaskState document, the other columns
-- are copies for people reading with psql.
CREATE TABLE tasks (
    task_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    workflow text NOT NULL,
    strategy text NOT NULL,
    status text NOT NULL,
    counts jsonb NOT NULL,
    cost jsonb NOT NULL,
    human_touches int NOT NULL DEFAULT 0,
    reason text,
    summary text,
    state jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tasks_tenant_status ON tasks (tenant_id, status);

-- Step history: one row per proposed action.
CREATE TABLE steps (
    task_id text NOT NULL REFERENCES tasks (task_id),
    step int NOT NULL,
    action_id text NOT NULL UNIQUE,
    tool text NOT NULL,
    args jsonb NOT NULL,
    tainted_args jsonb NOT NULL,
    status text NOT NULL,
    decision text,
    reasons jsonb NOT NULL,
    approval_id text,
    attempts int NOT NULL DEFAULT 0,
    cost_usd double precision NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, step)
);

-- Events already applied (redelivery is a no-op) ...
CREATE TABLE processed_events (
    event_id text PRIMARY KEY,
    task_id text NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now()
);

-- ... and what they produced, kept until published: a crash between commit and publish re-publishes
-- the same events (same ids) when the source event is redelivered, never new ones.
CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    source_event_id text NOT NULL,
    task_id text NOT NULL,
    topic text NOT NULL,
    payload text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_source ON outbox (source_event_id);
