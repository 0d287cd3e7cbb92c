-- What each task read of entries of the tenant's system of record (a trusted read whose catalog entry
-- declares `records`): what is left on the entry and its currency. The latest read of an entry wins;
-- a later call of the task on that entry (`facts.record`) is bounded by it.
CREATE TABLE records (
    tenant_id text NOT NULL,
    task_id text NOT NULL,
    record_id text NOT NULL,
    amount_usd double precision NOT NULL,
    currency text NOT NULL,
    source text NOT NULL,
    read_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, task_id, record_id)
);
