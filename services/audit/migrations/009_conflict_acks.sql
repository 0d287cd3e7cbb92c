-- An operator's acknowledgement of a recorded conflict (`tidegate audit conflicts ack`): the conflict stays in
-- `conflicts` for good, and `verify` shows it as acknowledged instead of a break, but only when `signature` (over the
-- conflict as recorded, the reason, who and when: services/audit/acknowledgements.py) verifies against an operator on
-- the allow-list. Written by the operator's login (the schema owner's member); the service's login and its writer
-- role may only read it. Append-only, as the log: a later acknowledgement adds a row, none is changed or removed.
CREATE TABLE conflict_acks (
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    kafka_offset   bigint      NOT NULL,
    record_sha256  bytea       NOT NULL,
    logged_seq     bigint,                        -- the conflict as the operator saw it: the row the log holds there
    differs        text[]      NOT NULL,
    reason         text        NOT NULL CHECK (btrim(reason) <> ''),
    acked_by       text        NOT NULL,          -- the operator whose key signed it
    acked_at       timestamptz NOT NULL,
    key_id         text        NOT NULL,
    signature      text        NOT NULL,
    written_by     text        NOT NULL DEFAULT session_user,  -- the login that inserted the row (not signed: for the record)
    PRIMARY KEY (topic, partition, kafka_offset, record_sha256, key_id, acked_at),
    FOREIGN KEY (topic, partition, kafka_offset, record_sha256) REFERENCES conflicts (topic, partition, kafka_offset, record_sha256)
);

CREATE TRIGGER conflict_acks_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON conflict_acks
    FOR EACH STATEMENT EXECUTE FUNCTION reject_change();
GRANT SELECT ON conflict_acks TO tidegate_audit_writer;
