-- Retention: the log's oldest rows may leave the database, only through `prune_log`, after
-- `tidegate audit archive` wrote them to a file an auditor can verify offline. A prune removes, per
-- chain, every row before the head a signed checkpoint names; that head row stays, as the anchor
-- the kept chain is verified from (and as the head the service appends after: a chain is never
-- emptied, so the writer never starts it again at seq 1). Each prune is recorded in `prunes`.
CREATE TABLE prunes (
    scope          text        COLLATE "C" NOT NULL,
    checkpoint_id  bigint      NOT NULL,           -- the checkpoint whose signed heads are the anchor
    rows_removed   bigint      NOT NULL,
    archive_sha256 text        NOT NULL CHECK (archive_sha256 ~ '^[0-9a-f]{64}$'),
    pruned_at      timestamptz NOT NULL DEFAULT now(),
    pruned_by      text        NOT NULL DEFAULT session_user,  -- the login that ran it
    PRIMARY KEY (scope, checkpoint_id),
    FOREIGN KEY (scope, checkpoint_id) REFERENCES checkpoints (scope, checkpoint_id)
);

CREATE TRIGGER prunes_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON prunes
    FOR EACH STATEMENT EXECUTE FUNCTION reject_change();
GRANT SELECT ON prunes TO tidegate_audit_writer;

-- The one way rows leave the log. SECURITY DEFINER: it runs as its owner (the schema's owner role),
-- and only the owner and its members (the operator's login, the migrator) may execute it, not the
-- service's login or the writer role. It refuses a checkpoint at or before the last prune, a head
-- row that is not the one signed, and a count of rows that differs from what the archive read.
CREATE FUNCTION prune_log(p_scope text, p_checkpoint_id bigint, p_archive_sha256 text, p_expected_rows bigint)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = audit, pg_temp AS $$
DECLARE
    cp       audit.checkpoints%ROWTYPE;
    head     record;
    t        text;
    p        integer;
    head_seq bigint;
    signed   bytea;
    n        bigint;
    removed  bigint := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('tidegate.audit.prune:' || p_scope, 0));
    SELECT * INTO cp FROM audit.checkpoints WHERE scope = p_scope AND checkpoint_id = p_checkpoint_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no checkpoint % in scope %', p_checkpoint_id, p_scope USING ERRCODE = 'no_data_found';
    END IF;
    IF EXISTS (SELECT 1 FROM audit.prunes WHERE scope = p_scope AND checkpoint_id >= p_checkpoint_id) THEN
        RAISE EXCEPTION 'the log of scope % is already pruned through checkpoint % or later', p_scope, p_checkpoint_id
            USING ERRCODE = 'unique_violation';
    END IF;
    PERFORM set_config('tidegate_audit.pruning', p_scope || ':' || p_checkpoint_id, true);
    FOR head IN SELECT key, value FROM jsonb_each(cp.heads) LOOP
        t := substring(head.key FROM '^(.*):[0-9]+$');
        p := substring(head.key FROM ':([0-9]+)$')::integer;
        head_seq := (head.value ->> 'seq')::bigint;
        SELECT hash INTO signed FROM audit.log WHERE topic = t AND partition = p AND seq = head_seq;
        IF signed IS DISTINCT FROM decode(head.value ->> 'hash', 'hex') THEN
            RAISE EXCEPTION 'the row at %[%] seq % is not the head checkpoint % signed', t, p, head_seq, p_checkpoint_id
                USING ERRCODE = 'data_exception';
        END IF;
        DELETE FROM audit.log WHERE topic = t AND partition = p AND seq < head_seq;
        GET DIAGNOSTICS n = ROW_COUNT;
        removed := removed + n;
    END LOOP;
    PERFORM set_config('tidegate_audit.pruning', '', true);
    IF removed <> p_expected_rows THEN
        RAISE EXCEPTION 'the prune would remove % rows, the archive read %', removed, p_expected_rows USING ERRCODE = 'data_exception';
    END IF;
    INSERT INTO audit.prunes (scope, checkpoint_id, rows_removed, archive_sha256, pruned_by)
        VALUES (p_scope, p_checkpoint_id, removed, p_archive_sha256, session_user);
    RETURN removed;
END
$$;
REVOKE ALL ON FUNCTION prune_log(text, bigint, text, bigint) FROM PUBLIC;

-- The log's DELETE trigger lets exactly that function through: the flag it sets, seen by a
-- statement run as the function's owner (what a SECURITY DEFINER body runs as). Anyone else, the
-- owner's members included, is refused as before; UPDATE and TRUNCATE are refused to everyone.
CREATE FUNCTION reject_change_but_prune() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND coalesce(current_setting('tidegate_audit.pruning', true), '') <> ''
       AND current_user = (SELECT pg_get_userbyid(proowner) FROM pg_proc
                           WHERE oid = 'audit.prune_log(text, bigint, text, bigint)'::regprocedure) THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'audit.% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

DROP TRIGGER log_append_only ON log;
CREATE TRIGGER log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON log
    FOR EACH STATEMENT EXECUTE FUNCTION reject_change_but_prune();
