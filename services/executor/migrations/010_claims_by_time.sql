-- The newest claim the database holds for a deployment prefix, read at every start (`services/executor/restored.py`,
-- `check_not_behind`): the check reads every result the executor signed on `actions.results` since it. A claim's
-- `claimed_at` is set once, when it is made (a later transition changes `updated_at`, already indexed for running
-- claims): the index costs one entry per claim, and finding the newest no longer scans the whole table.
CREATE INDEX actions_by_claim_time ON actions (topic_prefix, claimed_at);
