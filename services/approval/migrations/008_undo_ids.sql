-- Each kept result names the id its undo has (servicekit.undo.undo_action_id), so the approval API knows an
-- undo when it is asked to undo one and refuses it, as `tidegate undo` does (docs/autonomy.md). Rows kept
-- before get the id computed here the way undo_action_id computes it: `undo-<action_id>`, or, past 256
-- characters, its first 223 and a dash and 32 hex digits of the SHA-256 of the whole original id (UTF-8).
-- The column stays nullable: an older copy of the service (rolling upgrade) inserts without it.
ALTER TABLE undo_results ADD COLUMN undo_id text;
UPDATE undo_results SET undo_id = CASE
    WHEN char_length(action_id) <= 251 THEN 'undo-' || action_id
    ELSE left('undo-' || action_id, 223) || '-' || left(encode(sha256(convert_to(action_id, 'UTF8')), 'hex'), 32)
END;
CREATE UNIQUE INDEX undo_results_undo_id ON undo_results (undo_id);
