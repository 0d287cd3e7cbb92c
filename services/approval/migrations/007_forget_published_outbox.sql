-- An outbox item is deleted once it is on the bus (as the planner's are); items published before this migration were
-- only marked so and were kept for ever. Nothing reads a published item again: the audit log keeps every event.
DELETE FROM outbox WHERE published_at IS NOT NULL;
