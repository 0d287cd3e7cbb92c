-- Demo helpdesk: tickets, their tags, internal notes, reply drafts and sent replies.
CREATE TABLE tickets (
    tenant_id text NOT NULL,
    ticket_id text NOT NULL,
    customer_id text NOT NULL,
    requester_email text NOT NULL,
    subject text NOT NULL,
    body text NOT NULL,
    status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'pending', 'answered', 'closed')),
    priority text NOT NULL DEFAULT 'normal' CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    order_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, ticket_id)
);

CREATE TABLE ticket_tags (
    tenant_id text NOT NULL,
    ticket_id text NOT NULL,
    tag text NOT NULL,
    added_by_action text,
    added_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, ticket_id, tag),
    FOREIGN KEY (tenant_id, ticket_id) REFERENCES tickets (tenant_id, ticket_id)
);

CREATE TABLE internal_notes (
    note_id bigserial PRIMARY KEY,
    tenant_id text NOT NULL,
    ticket_id text NOT NULL,
    note text NOT NULL,
    idempotency_key text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, idempotency_key),
    FOREIGN KEY (tenant_id, ticket_id) REFERENCES tickets (tenant_id, ticket_id)
);

CREATE TABLE reply_drafts (
    draft_id bigserial PRIMARY KEY,
    tenant_id text NOT NULL,
    ticket_id text NOT NULL,
    body text NOT NULL,
    idempotency_key text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, idempotency_key),
    FOREIGN KEY (tenant_id, ticket_id) REFERENCES tickets (tenant_id, ticket_id)
);

CREATE TABLE sent_replies (
    reply_id bigserial PRIMARY KEY,
    tenant_id text NOT NULL,
    ticket_id text NOT NULL,
    to_address text NOT NULL,
    body text NOT NULL,
    idempotency_key text NOT NULL,
    sent_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, idempotency_key),
    FOREIGN KEY (tenant_id, ticket_id) REFERENCES tickets (tenant_id, ticket_id)
);
