-- The newest decision the database holds, read at every start (`services/policy/restored.py`, `check_not_behind`): the
-- check reads every decision the policy signed on `actions.decided` since it. Without an index, finding it scans the
-- whole table, which only grows. Decisions are inserted once and never updated: the index costs one entry per decision.
CREATE INDEX decisions_by_time ON decisions (decided_at);
