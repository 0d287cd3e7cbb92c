-- Webhook endpoints carry proof the database cannot make (services/approval/_endpoint_rows.py): the secret is sealed
-- (HPKE, to the approval service's `webhook-secrets` key pair kept on its own disk, bound to the row's tenant and
-- endpoint id), and the row is signed (Ed25519, by the service or an operator) over its tenant, id, URL, approvers,
-- enabled flag, source and the sealed secret. The service's own login can write rows, not signatures, and cannot open
-- a secret. Every secret stored in clear until now was readable by that login: it is dropped here, so each endpoint
-- made before this migration is refused (no message sent, no callback accepted) until an admin of its tenant (or an
-- operator) registers it again (POST /api/v1/webhooks/endpoints); endpoints of the settings file are sealed again at the
-- service's next start.
ALTER TABLE webhook_endpoints ALTER COLUMN secret DROP NOT NULL;
ALTER TABLE webhook_endpoints ADD COLUMN secret_key_id text;
ALTER TABLE webhook_endpoints ADD COLUMN secret_sealed bytea;
ALTER TABLE webhook_endpoints ADD COLUMN key_id text;
ALTER TABLE webhook_endpoints ADD COLUMN signature text;
UPDATE webhook_endpoints SET secret = NULL;
