-- The policy service's own schema (search_path is set to it by the migrations runner).

-- One row per decision: keyed by action id (a proposal) or `approval:<approval_id>` (a re-evaluation
-- after a human grant). The exact events published are kept, so a redelivery republishes them.
CREATE TABLE decisions (
    key text PRIMARY KEY,
    action_id text NOT NULL,
    tenant_id text NOT NULL,
    task_id text NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('allow', 'escalate', 'deny')),
    action_digest text NOT NULL,
    proposal jsonb NOT NULL,
    decided_event text NOT NULL,
    authorized_event text,
    decided_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX decisions_action ON decisions (action_id);

-- Budget held for each authorized call: reserved at authorization, released on failure, settled on success.
CREATE TABLE reservations (
    action_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    task_id text NOT NULL,
    tool text NOT NULL,
    args jsonb NOT NULL,
    amount_usd numeric(18, 6) NOT NULL,
    settled_usd numeric(18, 6),
    status text NOT NULL CHECK (status IN ('reserved', 'settled', 'released')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Running spend (reserved + settled) per task, and per tenant under task_id '*': O(1) budget checks.
CREATE TABLE spend (
    tenant_id text NOT NULL,
    task_id text NOT NULL,
    amount_usd numeric(18, 6) NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, task_id)
);

-- Payees a tenant has successfully paid (seeded ones live in the pack's settings.yaml).
CREATE TABLE known_payees (
    tenant_id text NOT NULL,
    payee text NOT NULL,
    learned_from text NOT NULL,
    added_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, payee)
);

-- Every policy version the service has decided with.
CREATE TABLE policy_versions (
    version text PRIMARY KEY,
    files jsonb NOT NULL,
    settings jsonb NOT NULL,
    published_by text NOT NULL,
    first_used_at timestamptz NOT NULL DEFAULT now()
);
