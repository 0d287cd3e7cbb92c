-- The approval service's own schema (search_path is set to it by the migrations runner).

-- One row per request for a human: an escalated call (kind 'approval') or an unknown outcome to
-- follow up (kind 'follow_up'); the full record is kept as JSON, the columns are what we query.
CREATE TABLE IF NOT EXISTS approvals (
    approval_id   text PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('approval', 'follow_up')),
    action_id     text NOT NULL,
    task_id       text NOT NULL,
    tenant_id     text NOT NULL,
    tool          text NOT NULL,
    status        text NOT NULL CHECK (status IN ('pending', 'granted', 'rejected', 'expired', 'resolved')),
    version       integer NOT NULL,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    escalated_at  timestamptz,
    record        jsonb NOT NULL,
    UNIQUE (action_id, kind)
);
CREATE INDEX IF NOT EXISTS approvals_pending ON approvals (expires_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS approvals_tenant ON approvals (tenant_id, status, created_at);

-- Events to publish, written in the same transaction as the state they announce (transactional
-- outbox): a crash between commit and publish is repaired by the sweeper.
CREATE TABLE IF NOT EXISTS outbox (
    event_id      text PRIMARY KEY,
    approval_id   text NOT NULL REFERENCES approvals (approval_id),
    topic         text NOT NULL,
    payload       text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (created_at) WHERE published_at IS NULL;

-- Approver API tokens: only the SHA-256 of a token is stored.
CREATE TABLE IF NOT EXISTS approver_tokens (
    token_id      text PRIMARY KEY,
    token_sha256  text NOT NULL UNIQUE,
    approver      text NOT NULL,
    tenant_id     text NOT NULL,
    groups        text[] NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
CREATE INDEX IF NOT EXISTS approver_tokens_by_approver ON approver_tokens (approver, tenant_id);

-- One-time links already spent (their id), so a replayed link is refused.
CREATE TABLE IF NOT EXISTS used_links (
    link_id       text PRIMARY KEY,
    approval_id   text NOT NULL,
    approver      text NOT NULL,
    used_at       timestamptz NOT NULL DEFAULT now()
);

-- Outgoing webhook endpoints (from the settings file or the API), each with its own secret.
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    endpoint_id   text PRIMARY KEY,
    url           text NOT NULL,
    secret        text NOT NULL,
    tenant_id     text NOT NULL DEFAULT '*',
    approvers     text[] NOT NULL DEFAULT '{}',
    enabled       boolean NOT NULL DEFAULT true,
    source        text NOT NULL DEFAULT 'api',
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- The delivery log: one row per message (its id is the `webhook-id`, stable across retries) ...
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    delivery_id      text PRIMARY KEY,
    endpoint_id      text NOT NULL REFERENCES webhook_endpoints (endpoint_id),
    approval_id      text NOT NULL,
    event_type       text NOT NULL,
    body             text NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    last_status_code integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';

-- ... and one row per attempt.
CREATE TABLE IF NOT EXISTS webhook_attempts (
    delivery_id   text NOT NULL REFERENCES webhook_deliveries (delivery_id),
    attempt       integer NOT NULL,
    at            timestamptz NOT NULL DEFAULT now(),
    status_code   integer,
    error         text,
    duration_ms   double precision NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

-- Inbound callbacks already accepted, by `webhook-id`: a replay is refused.
CREATE TABLE IF NOT EXISTS inbound_messages (
    endpoint_id   text NOT NULL,
    message_id    text NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (endpoint_id, message_id)
);

-- What the service has seen of each task (decisions and results), for context and cost so far.
CREATE TABLE IF NOT EXISTS task_events (
    event_id      text PRIMARY KEY,
    tenant_id     text NOT NULL,
    task_id       text NOT NULL,
    action_id     text NOT NULL,
    type          text NOT NULL,
    tool          text NOT NULL,
    outcome       text,
    cost_usd      double precision NOT NULL DEFAULT 0,
    requested_by  text,
    risk          text,
    args          jsonb,
    summary       text NOT NULL DEFAULT '',
    at            timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS task_events_by_task ON task_events (tenant_id, task_id, at);
CREATE INDEX IF NOT EXISTS task_events_by_action ON task_events (action_id);
