-- When a webhook endpoint's rotation overlap ends (services/approval/_sweep.py, `_end_overlaps`): the sweep reads, by
-- this partial index, only the rows whose overlap has ended, to write them with the new secret alone. Before, it read,
-- verified and opened every endpoint's row at every round (every TIDEGATE_APPROVAL_SWEEP_INTERVAL_S), a cost that grew
-- with the endpoints while no overlap was due. The column says which rows to read, never what they hold: it is not
-- covered by the row's signature, and a row read by it is verified and opened as any other. A row written before this
-- migration keeps any overlap in its sealed secret alone, so it is marked '-infinity' (not known): the next sweep reads
-- each such row once, ends an overlap that has passed and sets the others' end (NULL when none is kept).
ALTER TABLE webhook_endpoints ADD COLUMN overlap_ends_at timestamptz;
UPDATE webhook_endpoints SET overlap_ends_at = '-infinity' WHERE secret_sealed IS NOT NULL AND source <> 'file' AND enabled;
CREATE INDEX webhook_endpoints_overlap_ends ON webhook_endpoints (overlap_ends_at) WHERE overlap_ends_at IS NOT NULL;
