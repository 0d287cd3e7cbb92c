-- Webhook endpoint ids are a tenant's own (issue #10 §3): an endpoint is keyed by (tenant_id, endpoint_id),
-- so an admin registering an id another tenant uses makes an endpoint of their own tenant and learns
-- nothing of the other's. Deliveries and accepted inbound message ids name the endpoint's tenant too.
ALTER TABLE webhook_deliveries ADD COLUMN tenant_id text;
UPDATE webhook_deliveries d SET tenant_id = e.tenant_id FROM webhook_endpoints e WHERE e.endpoint_id = d.endpoint_id;
ALTER TABLE webhook_deliveries ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_endpoint_id_fkey;

ALTER TABLE inbound_messages ADD COLUMN tenant_id text;
UPDATE inbound_messages m SET tenant_id = e.tenant_id FROM webhook_endpoints e WHERE e.endpoint_id = m.endpoint_id;
DELETE FROM inbound_messages WHERE tenant_id IS NULL;  -- ids of no endpoint: nothing can be replayed there
ALTER TABLE inbound_messages ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE inbound_messages DROP CONSTRAINT inbound_messages_pkey;
ALTER TABLE inbound_messages ADD PRIMARY KEY (tenant_id, endpoint_id, message_id);

ALTER TABLE webhook_endpoints DROP CONSTRAINT webhook_endpoints_pkey;
ALTER TABLE webhook_endpoints ADD PRIMARY KEY (tenant_id, endpoint_id);
DROP INDEX IF EXISTS webhook_endpoints_tenant;  -- the primary key leads with the tenant
CREATE INDEX webhook_endpoints_id ON webhook_endpoints (endpoint_id);  -- the older callback URL names the id alone

ALTER TABLE webhook_deliveries
    ADD FOREIGN KEY (tenant_id, endpoint_id) REFERENCES webhook_endpoints (tenant_id, endpoint_id);
ALTER TABLE inbound_messages
    ADD FOREIGN KEY (tenant_id, endpoint_id) REFERENCES webhook_endpoints (tenant_id, endpoint_id);
CREATE INDEX webhook_deliveries_tenant ON webhook_deliveries (tenant_id, created_at DESC);
