-- What the tenant's allowed calls let out (the `amount_usd` fact of an allowed decision), by task and by payee: the default
-- pack's thresholds count it (`facts.paid_task_cents`: the task's; `facts.paid_payee_cents`: the tenant's to one payee over
-- the last 24 hours, any task), so that a refund split into pieces under the threshold escalates at the piece that reaches it.
-- Written with its decision, in the same statement, under the tenant's lock; a record like decisions and spend, kept.
CREATE TABLE payouts (
    action_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    task_id text NOT NULL,
    payee text,
    amount_usd numeric NOT NULL,
    allowed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payouts_by_task ON payouts (tenant_id, task_id);
CREATE INDEX payouts_by_payee ON payouts (tenant_id, payee, allowed_at) WHERE payee IS NOT NULL;
