-- Approver tokens carry proof the database cannot make (services/approval/_row_proofs.py): an Ed25519 signature over
-- what the row grants (id, hash, approver, tenant, groups, operator flag, creation and expiry), by the operator's key
-- (`tidegate approvals token create|rotate`) or the approval service's own (an approver's rotation over the API).
-- The service's own login can write rows, not signatures: a row without one, or whose signature fails, is refused as
-- a credential and as a membership. Rows made before this migration have none: the operator re-issues each with
-- `tidegate approvals token rotate <id>` (`tidegate approvals token list` shows them as unsigned). created_at is
-- covered by the signature, so it is set by whoever signs, no longer by the database's clock.
ALTER TABLE approver_tokens ADD COLUMN key_id text;
ALTER TABLE approver_tokens ADD COLUMN signature text;
