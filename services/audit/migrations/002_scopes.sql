-- Several deployments (prefixes) can share one database: a sandbox or replay runs under its own
-- prefix. Each audit service signs only its own prefix's chains, numbering its checkpoints in its
-- own scope. Topic names compare bytewise so that one prefix's chains are one contiguous range.
ALTER TABLE log ALTER COLUMN topic TYPE text COLLATE "C";
ALTER TABLE checkpoints ADD COLUMN scope text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE checkpoints DROP CONSTRAINT checkpoints_pkey;
ALTER TABLE checkpoints ADD PRIMARY KEY (scope, checkpoint_id);
