-- Tenants' connector grants (see connectors/_store.py): the tools each tenant enabled, its account
-- settings that are not secret, and its credential sealed to the executor's key (HPKE; never plain text).
-- Written by `tidegate connectors`, read by the executor before each connector call.
CREATE TABLE connector_grants (
    tenant_id text NOT NULL,
    connector text NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    tools text[] NOT NULL DEFAULT '{}',
    connection jsonb NOT NULL DEFAULT '{}',
    key_id text,
    sealed_secret bytea,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, connector),
    CHECK ((key_id IS NULL) = (sealed_secret IS NULL))
);
