-- Between two attempts of a call (the backoff after a failure that is safe to repeat) an action is
-- `waiting`: no call is in flight. A process that stops then leaves the next attempt to the next
-- process, which makes it at `retry_at` with the error kept, instead of taking the action for a call
-- cut off mid-way (`running`: for a tool unsafe to repeat, an outcome a person must check).
ALTER TABLE actions DROP CONSTRAINT actions_status_check;
ALTER TABLE actions ADD CONSTRAINT actions_status_check
    CHECK (status IN ('claimed', 'running', 'waiting', 'succeeded', 'failed', 'unknown'));
ALTER TABLE actions ADD COLUMN retry_at timestamptz;
DROP INDEX actions_unfinished;
CREATE INDEX actions_unfinished ON actions (status) WHERE status IN ('claimed', 'running', 'waiting');
