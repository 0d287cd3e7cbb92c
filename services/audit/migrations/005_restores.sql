-- Restores of the database to an earlier backup, as the audit service finds them on starting: the
-- bus holds a checkpoint newer than the database's latest. The checkpoints superseded_from ..
-- checkpoint_id - 1 were published before the restore and are not in the database; checkpoint
-- `checkpoint_id` signs the heads the restored database held, before any record was read again.
-- `audit verify` checks what those published checkpoints signed past the restored heads by offset
-- (the rows were recorded again from the bus), and everything up to the restored heads by hash.
CREATE TABLE restores (
    scope           text        COLLATE "C" NOT NULL,
    checkpoint_id   bigint      NOT NULL,
    superseded_from bigint      NOT NULL,
    found_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, checkpoint_id),
    FOREIGN KEY (scope, checkpoint_id) REFERENCES checkpoints (scope, checkpoint_id),
    CHECK (superseded_from < checkpoint_id)
);

CREATE TRIGGER restores_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON restores
    FOR EACH STATEMENT EXECUTE FUNCTION reject_change();
GRANT SELECT, INSERT ON restores TO tidegate_audit_writer;
