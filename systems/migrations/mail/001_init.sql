-- Demo mail outbox: drafts waiting for a person, and messages sent.
CREATE TABLE outbox (
    message_id bigserial PRIMARY KEY,
    tenant_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('draft', 'sent')),
    to_addresses text[] NOT NULL,
    subject text NOT NULL,
    body text NOT NULL,
    idempotency_key text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, idempotency_key)
);
