-- The result event as first published (its JSON, so its event id): a redelivered or replayed
-- authorization re-sends this same event, never a new one that consumers would count again.
ALTER TABLE actions ADD COLUMN IF NOT EXISTS result_event text;
