-- Tokens expire, and a token that acts across tenants is an explicit operator token (issue #10 §3).
-- Tokens made before this migration expire 30 days after their creation; a token of tenant '*'
-- could only be made by the operator CLI, so it becomes an operator token. The column defaults
-- keep an older copy of the service (rolling upgrade) able to insert tokens, which expire too.
ALTER TABLE approver_tokens ADD COLUMN IF NOT EXISTS expires_at timestamptz;
ALTER TABLE approver_tokens ADD COLUMN IF NOT EXISTS operator boolean NOT NULL DEFAULT false;
UPDATE approver_tokens SET expires_at = created_at + interval '30 days' WHERE expires_at IS NULL;
UPDATE approver_tokens SET operator = true WHERE tenant_id = '*';
ALTER TABLE approver_tokens ALTER COLUMN expires_at SET DEFAULT now() + interval '30 days';
ALTER TABLE approver_tokens ALTER COLUMN expires_at SET NOT NULL;
CREATE INDEX IF NOT EXISTS webhook_endpoints_tenant ON webhook_endpoints (tenant_id);
