-- Demo CRM: customers, notes about them, deletion requests carried out, and user permissions.
CREATE TABLE customers (
    tenant_id text NOT NULL,
    customer_id text NOT NULL,
    name text NOT NULL,
    email text NOT NULL,
    plan text NOT NULL DEFAULT 'standard',
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    PRIMARY KEY (tenant_id, customer_id)
);

CREATE TABLE notes (
    note_id bigserial PRIMARY KEY,
    tenant_id text NOT NULL,
    customer_id text NOT NULL,
    note text NOT NULL,
    idempotency_key text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, idempotency_key),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, customer_id)
);

CREATE TABLE deletion_requests (
    request_id bigserial PRIMARY KEY,
    tenant_id text NOT NULL,
    customer_id text NOT NULL,
    reason text NOT NULL DEFAULT '',
    status text NOT NULL DEFAULT 'completed' CHECK (status IN ('completed')),
    idempotency_key text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, idempotency_key),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, customer_id)
);

CREATE TABLE permissions (
    tenant_id text NOT NULL,
    user_id text NOT NULL,
    role text NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id, role)
);

CREATE TABLE permission_changes (
    change_id bigserial PRIMARY KEY,
    tenant_id text NOT NULL,
    user_id text NOT NULL,
    role text NOT NULL,
    grant_role boolean NOT NULL,
    idempotency_key text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, idempotency_key)
);
