-- Whether a human granted the call a payout row is for (its decision was taken again after a grant, `approval:<id>`):
-- what the tenant paid out over the last 24 hours without a human, all tasks and payees together, counts only the rows
-- without one (`facts.paid_tenant_cents`, against the tenant's `tenant_daily_payout_usd`). An agent holding one client
-- key paid three known payees 1,119.98 USD in three tasks, each piece under the 500 USD threshold and under its payee's
-- daily bound, with no human (red team F5). Rows written before keep their truth: those whose action was allowed by a grant.
ALTER TABLE payouts ADD COLUMN approved boolean NOT NULL DEFAULT false;
UPDATE payouts o SET approved = true
WHERE EXISTS (SELECT 1 FROM decisions d WHERE d.action_id = o.action_id AND d.key LIKE 'approval:%' AND d.outcome = 'allow');
-- The figure each decision reads under its tenant's lock: the tenant's rows of the window that still count, summed from the index.
CREATE INDEX payouts_unapproved_by_tenant ON payouts (tenant_id, allowed_at) INCLUDE (amount_usd)
WHERE NOT approved AND failed_at IS NULL;
