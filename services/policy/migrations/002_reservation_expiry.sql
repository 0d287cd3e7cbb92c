-- A reservation whose action never ran is released once its authorization expired (plus a margin);
-- one whose outcome is unknown (`action.unknown`) stays held until a human resolves it. A result
-- that still arrives for an expired reservation is counted again (the call ran after all).
ALTER TABLE reservations ADD COLUMN outcome_unknown_at timestamptz;
ALTER TABLE reservations ADD COLUMN expired_at timestamptz;
CREATE INDEX reservations_held ON reservations (created_at) WHERE status = 'reserved';
