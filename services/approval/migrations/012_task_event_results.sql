-- A result kept among a task's events carries the result itself (`ActionResultData` as JSON, without what the call
-- returned nor its undo plan: the executor and `undo_results` keep those), so that what became of a granted call (a
-- call made, or a refusal before any: `ActionResultData.refusal`) is read from its status, attempts and error, never
-- parsed back from the summary the service writes beside them for a person. NULL for decisions. A result kept before
-- this migration has none: services/approval/_legacy_results.py reads it from its summary, the one place that does.
ALTER TABLE task_events ADD COLUMN result jsonb;
