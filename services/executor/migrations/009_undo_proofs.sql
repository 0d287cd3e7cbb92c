-- An undo plan is a call the executor computed to take back one of its own, and the state read before a call is
-- what that plan restores: the executor's own login can write both, so each carries the executor's signature
-- (Ed25519, its signing key, which the database does not hold) over the row's identity and that part
-- (`services/executor/undo.py`, `servicekit/row_proofs.py`). A part without a valid one is refused, never used.
-- Rows kept before this migration carry none: their undo is `unavailable` (the plan already in the call's result stands).
ALTER TABLE undo_plans
    ADD COLUMN before_key_id text,
    ADD COLUMN before_signature text,
    ADD COLUMN plan_key_id text,
    ADD COLUMN plan_signature text;
