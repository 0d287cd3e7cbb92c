-- Why a trusted read of the system of record (a tool whose catalog entry declares `records`) failed: the executor's error
-- and attempts, NULL for every other call. A later call of the task on the entry it asked for (joined through the
-- read's reservation, which holds its args) escalates `record_read_failed` with that error, not `record_not_read`.
ALTER TABLE call_outcomes ADD COLUMN error text;
