-- On-call starts from an action id as often as from a task id: it is the idempotency key a system of record
-- (Stripe, a helpdesk) shows. `tidegate audit show|explain ACTION_ID` and `audit search --action` find its rows
-- here; only rows about an action carry one, so the index holds those alone.
CREATE INDEX log_action ON log (action_id) WHERE action_id IS NOT NULL;
