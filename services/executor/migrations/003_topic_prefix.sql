-- The deployment (topic prefix) that claimed each action: at start an executor settles only its own
-- prefix's `running` rows, never another deployment's sharing the database. Rows from before this
-- column belong to the default prefix.
ALTER TABLE actions ADD COLUMN topic_prefix text NOT NULL DEFAULT 'tidegate.';
ALTER TABLE actions ALTER COLUMN topic_prefix DROP DEFAULT;
CREATE INDEX actions_running ON actions (topic_prefix, updated_at) WHERE status = 'running';
