-- An undo id cut with a digest now starts `undo~`, never `undo-` (servicekit.undo.undo_action_id): with `undo-` as
-- well, a crafted id of 251 characters, `<first 218 of a long id>-<its digest>`, had the long id's undo id, so one
-- tenant could take another's (docs/autonomy.md). Rows kept before get the new form: `undo~`, the id's first 218
-- characters, a dash and 32 hex digits of the SHA-256 of the whole id (UTF-8). A row kept without an undo id (an
-- older copy of the service, or an id another row held) gets its own: no other row can hold it any more.
UPDATE undo_results
SET undo_id = 'undo~' || left(action_id, 218) || '-' || left(encode(sha256(convert_to(action_id, 'UTF8')), 'hex'), 32)
WHERE char_length(action_id) > 251;
UPDATE undo_results SET undo_id = 'undo-' || action_id WHERE undo_id IS NULL;
