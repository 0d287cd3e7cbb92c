-- ANALYZE keeps statistics only for the columns the log's searches filter, join or sort on.
-- The raw value, the headers, the two hashes, the traceparent and the refusal's text are written
-- and read back, never searched: their statistics were never used by a plan, and computing them was
-- most of an ANALYZE of the log (a 27,000-row log: 590 → 345 ms, the headers' jsonb alone ~220 ms).
-- Autovacuum analyzes the log each time it grows by a tenth, so this is CPU taken from the services
-- beside it (docs/operations.md, 'Where the latency tail at capacity comes from').
ALTER TABLE log ALTER COLUMN value SET STATISTICS 0;
ALTER TABLE log ALTER COLUMN headers SET STATISTICS 0;
ALTER TABLE log ALTER COLUMN prev_hash SET STATISTICS 0;
ALTER TABLE log ALTER COLUMN hash SET STATISTICS 0;
ALTER TABLE log ALTER COLUMN traceparent SET STATISTICS 0;
ALTER TABLE log ALTER COLUMN invalid_reason SET STATISTICS 0;
