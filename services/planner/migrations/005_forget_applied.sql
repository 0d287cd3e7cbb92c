-- The ids of applied events are forgotten once no bus keeps the events (PlannerSettings.applied_events_kept_s):
-- the sweep finds the oldest by when they were applied. Rows come in time order, so a BRIN index is small and cheap to keep.
CREATE INDEX processed_events_seen ON processed_events USING brin (seen_at);
