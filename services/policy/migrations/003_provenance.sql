-- What each task has read: untrusted values (from results of tools whose output is untrusted, and from
-- the task input's untrusted fields) and values its trusted request vouches for. Append-only; the
-- policy service marks a later argument derived from an untrusted value as tainted.
CREATE TABLE provenance (
    tenant_id text NOT NULL,
    task_id text NOT NULL,
    value text NOT NULL,
    trusted boolean NOT NULL,
    source text NOT NULL,
    learned_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, task_id, trusted, value)
);
