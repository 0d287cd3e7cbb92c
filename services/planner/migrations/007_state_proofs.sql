-- A task's state decides what the planner proposes next and signs (its mode, the steps still to propose, the results
-- so far), and the planner's own login can write it: each state now carries the planner's Ed25519 signature (its
-- signing key, which the database does not hold) over the task id, the deployment and the SHA-256 of the state's exact
-- text (`services/planner/state_seal.py`, `servicekit/row_proofs.py`). A state read without a valid one is refused:
-- nothing is proposed from it, and the task's next event of an action the planner proposed ends it failed
-- `state_refused`. Rows from before this migration carry none and are refused the same way: no signed source holds a
-- task's remaining plan, so none can be proven again. Let running tasks finish before upgrading (docs/planner.md).
-- Two nullable columns without a default: no table rewrite.
ALTER TABLE tasks ADD COLUMN state_key_id text, ADD COLUMN state_signature text;
