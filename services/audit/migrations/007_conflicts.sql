-- Tamper evidence: a record the bus delivered at a position the log is already past, that the log does not hold
-- as delivered (the row there holds other content, or there is no row though the chain is past it). The audit
-- service never drops one silently: it stores the record here, as read from Kafka, in the batch's transaction.
-- Append-only, as the log: the writer may only INSERT, and a trigger refuses UPDATE, DELETE and TRUNCATE to
-- everyone; `tidegate audit verify` reports every row of it as a break.
CREATE TABLE conflicts (
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    kafka_offset   bigint      NOT NULL,
    logged_seq     bigint,                        -- the row the log holds at that position (NULL: none, the chain is past it)
    differs        text[]      NOT NULL,          -- what differs: timestamp, timestamp type, key, headers, value
    kafka_ts       timestamptz NOT NULL,          -- the genuine record, as the bus delivered it
    ts_type        smallint    NOT NULL,
    key            bytea,
    headers        jsonb       NOT NULL,
    value          bytea,
    record_sha256  bytea       NOT NULL,          -- sha256 of the record's fingerprint (records.Fingerprint.digest)
    detected_at    timestamptz NOT NULL DEFAULT now(),
    -- A redelivery of the same genuine record is stored once; a row someone else inserts first cannot keep it out.
    PRIMARY KEY (topic, partition, kafka_offset, record_sha256)
);

CREATE TRIGGER conflicts_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON conflicts
    FOR EACH STATEMENT EXECUTE FUNCTION reject_change();
GRANT SELECT, INSERT ON conflicts TO tidegate_audit_writer;
