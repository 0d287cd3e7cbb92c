-- Demo payments: payees on file, orders, and refunds (one per idempotency key).
CREATE TABLE payees (
    tenant_id text NOT NULL,
    payee_id text NOT NULL,
    name text NOT NULL,
    email text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, payee_id)
);

CREATE TABLE orders (
    tenant_id text NOT NULL,
    order_id text NOT NULL,
    customer_id text NOT NULL,
    payee_id text NOT NULL,
    description text NOT NULL DEFAULT '',
    amount_usd numeric(12, 2) NOT NULL CHECK (amount_usd >= 0),
    status text NOT NULL DEFAULT 'paid' CHECK (status IN ('paid', 'partially_refunded', 'refunded')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, order_id),
    FOREIGN KEY (tenant_id, payee_id) REFERENCES payees (tenant_id, payee_id)
);

CREATE TABLE refunds (
    refund_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    order_id text NOT NULL,
    payee_id text NOT NULL,
    amount_usd numeric(12, 2) NOT NULL CHECK (amount_usd > 0),
    reason text NOT NULL DEFAULT '',
    idempotency_key text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- A second call with the same key returns the first refund instead of paying twice.
    UNIQUE (tenant_id, idempotency_key),
    FOREIGN KEY (tenant_id, order_id) REFERENCES orders (tenant_id, order_id),
    FOREIGN KEY (tenant_id, payee_id) REFERENCES payees (tenant_id, payee_id)
);
CREATE INDEX refunds_by_order ON refunds (tenant_id, order_id);
