-- A ticket's notes, drafts and sent replies by the ticket: `get_ticket` reads all three for every triage, and without
-- these indexes each read scanned every note, draft and reply the helpdesk ever kept (1.2 ms a read on average over
-- 3,600 triage tasks, growing with each). New indexes only: no table is rewritten; each build holds a SHARE lock on its table
-- (writes wait, reads go on), brief on a demo helpdesk's tables.
CREATE INDEX IF NOT EXISTS internal_notes_by_ticket ON internal_notes (tenant_id, ticket_id, note_id);
CREATE INDEX IF NOT EXISTS reply_drafts_by_ticket ON reply_drafts (tenant_id, ticket_id, draft_id);
CREATE INDEX IF NOT EXISTS sent_replies_by_ticket ON sent_replies (tenant_id, ticket_id);
