-- A decision's proposal and its two signed events make a row above 2 KB, which PostgreSQL compresses
-- on insert: pglz took ~7 % of the policy's database CPU in a burst (perf). lz4 does it for a fraction
-- of that. Only new values are compressed so; a server built without lz4 (Debian's has it) keeps pglz.
DO $$
BEGIN
    ALTER TABLE decisions
        ALTER COLUMN proposal SET COMPRESSION lz4,
        ALTER COLUMN decided_event SET COMPRESSION lz4,
        ALTER COLUMN authorized_event SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this PostgreSQL has no lz4: policy.decisions keeps the default compression';
END $$;
