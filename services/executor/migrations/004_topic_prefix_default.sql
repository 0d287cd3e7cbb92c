-- Keep the default: a row claimed by an executor that does not name its prefix belongs to the default
-- deployment (as rows from before 002 do), instead of being refused.
ALTER TABLE actions ALTER COLUMN topic_prefix SET DEFAULT 'tidegate.';
