-- A task's working state (what it read, the records it read, how its calls ended, whether its request is learned,
-- its reservations once settled or released) is only read while the task runs, and grew by ~35 rows a task forever.
-- It is forgotten row by row once older than PolicySettings.task_state_kept_s, and each task that loses a row is
-- named here in the same statement: a later proposal or grant for it is denied `task_expired` (fail closed: what
-- it read, and so what its arguments may carry, is no longer known). A row here is a few dozen bytes a task.
CREATE TABLE tasks_forgotten (
    tenant_id text NOT NULL,
    task_id text NOT NULL,
    forgotten_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, task_id)
);
-- The sweep finds the oldest rows by when each was written. Rows come in time order, so BRIN indexes are small and
-- cheap to keep.
CREATE INDEX provenance_learned_at ON provenance USING brin (learned_at);
CREATE INDEX records_read_at ON records USING brin (read_at);
CREATE INDEX call_outcomes_seen_at ON call_outcomes USING brin (seen_at);
CREATE INDEX tasks_learned_learned_at ON tasks_learned USING brin (learned_at);
CREATE INDEX reservations_created_at ON reservations USING brin (created_at);
