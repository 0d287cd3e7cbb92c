-- The executor's signed result event, as the service received it (envelope and signature, byte for byte), beside the
-- result it keeps for an approver's undo: the undo API proposes only the plan of that event, once it verifies as the
-- executor's for exactly that action, tenant and task (services/approval/_undo_proofs.py). The `result` column, which
-- the service's own database login can rewrite, is never a plan to propose. Rows kept before have no event: their
-- undo is refused over the API (`tidegate undo` still reads the signed event from the audit log). Nullable: an older
-- copy of the service (rolling upgrade) inserts without it, and such a row is refused the same way.
ALTER TABLE undo_results ADD COLUMN event text;
