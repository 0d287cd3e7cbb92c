-- When each webhook endpoint's secret was set (`tidegate credentials` lists it with its age, DUE past the rotation
-- period as every other credential): written at registration with a new secret and at each rotation; kept when an
-- endpoint is registered again with the secret it had, enrolled on, left, or its overlap ends. The database's time.
-- NULL for a secret set before this migration (not recorded anywhere): listed with an unknown age, and due, until its
-- next rotation dates it. Not signed: it dates a secret for the operator's rotation policy, it grants nothing.
ALTER TABLE webhook_endpoints ADD COLUMN secret_set_at timestamptz;
