-- Each connector grant carries the Ed25519 signature of the operator who wrote it with `tidegate connectors`
-- (connectors/_proof.py): over the tenant, connector, enabled, every tool, every account setting and the sealed
-- credential's key id and SHA-256. The executor refuses a row whose signature does not verify against an operator
-- key on the allow-list (a file on disk, never in this database), so this schema's own login cannot re-point a
-- grant or widen its tools. Rows written before this migration have no signature: the executor refuses them
-- (`grant_unsigned`) until an operator checks and signs them (`tidegate connectors sign --all`).
ALTER TABLE connector_grants
    ADD COLUMN proof_key_id text,
    ADD COLUMN proof_signature text,
    ADD COLUMN signed_by text,
    ADD COLUMN signed_at timestamptz,
    ADD CONSTRAINT connector_grants_proof_whole CHECK (num_nulls(proof_key_id, proof_signature, signed_by, signed_at) IN (0, 4));
