-- Each queued webhook message carries the approval service's signature over its delivery id, tenant, endpoint,
-- request, type and the SHA-256 of its body (`services/approval/_message_proofs.py`): the Standard Webhooks signature
-- is made at send time over the stored body, so a body the service's database login rewrote (or a message it
-- inserted) would reach the approver's chat signed with the endpoint's secret. A message without a valid proof is
-- failed with why, never sent. NULL for messages queued before this migration: those still pending then are failed
-- so (the requests stay on the approver page and in `tidegate approvals list`).
ALTER TABLE webhook_deliveries ADD COLUMN body_key_id text, ADD COLUMN body_signature text;
