-- Messages an endpoint is owed (docs/approval.md, "An endpoint registered again"): while its row was refused (unsigned
-- since migration 011, or changed in the database), requests of its tenant were raised and no message was written for
-- it. When a row that was refused is registered again, `owed_due` is set in the same statement; the next delivery round
-- writes one message per request of its tenant still pending that it has none of (ids derived from the endpoint and the
-- request, so nothing is written twice), then clears it. Nothing is stored while the row is refused.
ALTER TABLE webhook_endpoints ADD COLUMN owed_due boolean NOT NULL DEFAULT false;
-- Whether an endpoint already has a message of a request: looked up per (endpoint, request).
CREATE INDEX webhook_deliveries_of_request ON webhook_deliveries (tenant_id, endpoint_id, approval_id);
