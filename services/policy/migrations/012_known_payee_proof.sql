-- A known payee lifts `new_payee_blocked`: it is authority, so a row counts only with proof that the policy itself
-- learned it (a settled payment): the Ed25519 signature of its policy key over (tenant, payee), `services.policy.payees`.
-- The database holds no key, so the policy's own login cannot make a row count. Rows from before this migration
-- have no proof and count as unknown payees (docs/security/database.md, "policy"): a payee the tenant pays is listed
-- in its known_payees (`tidegate tenant set --payee`, or its directory), or is proven again by the next payment that settles.
ALTER TABLE known_payees ADD COLUMN key_id text, ADD COLUMN proof text;
