-- When an allowed call's result said it failed (nothing was paid): it counts toward no payout figure from then on
-- (`facts.paid_task_cents`, `facts.paid_payee_cents`). An approver was told "the tenant paid this payee 1,105.48 USD"
-- where 0.48 USD had been paid, and every further cent to that payee escalated for a day (the platform probe). An
-- `unknown` ending keeps counting: the money may have moved. The row stays, a record like decisions and spend.
ALTER TABLE payouts ADD COLUMN failed_at timestamptz;
