-- The audit log: every record of every topic of the deployment, hash-chained per topic-partition,
-- and signed checkpoints of the chain heads. Append-only: a trigger rejects UPDATE, DELETE and
-- TRUNCATE, and the service writes through a role that may only INSERT and SELECT.
-- (search_path is set to the `audit` schema by the migrations runner.)

CREATE TABLE log (
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    kafka_offset   bigint      NOT NULL,
    seq            bigint      NOT NULL,          -- 1, 2, 3… per (topic, partition): the chain position
    kafka_ts       timestamptz NOT NULL,          -- the record's Kafka timestamp
    ts_type        smallint    NOT NULL,          -- 0 create time, 1 log-append time
    key            bytea,
    headers        jsonb       NOT NULL,          -- [{"k": name, "v": utf-8 text} | {"k": name, "b64": …} | {"k": name}]
    value          bytea,                         -- the raw bytes, exactly as on the bus
    valid          boolean     NOT NULL,          -- whether the value is a valid event of its topic's contract
    invalid_reason text,
    event_id       text,                          -- the following are read from the value when it is a JSON object
    event_type     text,
    tenant_id      text,
    task_id        text,
    action_id      text,
    tool           text,
    outcome        text,
    reasons        text[]      NOT NULL,
    trace_id       text,
    traceparent    text,
    event_time     timestamptz,
    duplicate      boolean     NOT NULL,          -- a valid event whose id was already recorded at another position
    recorded_at    timestamptz NOT NULL,
    prev_hash      bytea       NOT NULL,          -- hash of seq - 1 (32 zero bytes for seq 1)
    hash           bytea       NOT NULL,          -- sha256(prev_hash || canonical content of this row)
    PRIMARY KEY (topic, partition, seq),
    UNIQUE (topic, partition, kafka_offset)
);

-- An event is recorded once as itself; a second copy of a valid event id is kept, flagged `duplicate`.
CREATE UNIQUE INDEX log_event_id_once ON log (event_id) WHERE valid AND NOT duplicate;
CREATE INDEX log_task ON log (task_id, kafka_ts);
CREATE INDEX log_tenant_ts ON log (tenant_id, kafka_ts);
CREATE INDEX log_trace ON log (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX log_tool ON log (tool, kafka_ts) WHERE tool IS NOT NULL;
CREATE INDEX log_ts ON log (kafka_ts);
CREATE INDEX log_reasons ON log USING gin (reasons);

CREATE TABLE checkpoints (
    checkpoint_id bigint      PRIMARY KEY,
    taken_at      timestamptz NOT NULL,
    heads         jsonb       NOT NULL,           -- "topic:partition" -> {"seq", "hash", "offset"}
    rows          bigint      NOT NULL,
    key_id        text        NOT NULL,
    signature     text        NOT NULL
);

CREATE FUNCTION reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit.% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON log
    FOR EACH STATEMENT EXECUTE FUNCTION reject_change();
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION reject_change();

-- The role the service writes as: INSERT and SELECT on the log, nothing else. Roles are
-- cluster-wide, so another database of the same cluster may have created it already.
DO $$
BEGIN
    CREATE ROLE tidegate_audit_writer NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'tidegate_audit_writer', 'MEMBER') THEN
        EXECUTE format('GRANT tidegate_audit_writer TO %I', current_user);
    END IF;
END
$$;
GRANT USAGE ON SCHEMA audit TO tidegate_audit_writer;
GRANT SELECT, INSERT ON log, checkpoints TO tidegate_audit_writer;
