-- A task's whole state is written at every event the planner applies, by the planner alone, and read
-- whole by it; psql readers keep `->` and `->>`. As `jsonb` each write parsed the document into a
-- tree and sorted its keys; `json` only checks that it is JSON. lz4 compresses it (above 2 KB once a
-- task has a few steps) for less CPU than pglz. One 4.4 KB state updated 3,000 times, backend CPU per
-- update including the commit: jsonb + pglz ~155 us, jsonb + lz4 ~128 us, json + lz4 ~108 us.
-- The type change rewrites the table under an exclusive lock: on a large table, run it in a quiet hour.
ALTER TABLE tasks ALTER COLUMN state TYPE json USING state::json;
-- A server built without lz4 (Debian's has it) keeps its default compression.
DO $$
BEGIN
    ALTER TABLE tasks ALTER COLUMN state SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this PostgreSQL has no lz4: planner.tasks.state keeps the default compression';
END $$;
