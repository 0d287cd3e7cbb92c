-- The approval service's own schema (search_path is set to it by the migrations runner).
CREATE TABLE IF NOT EXISTS processed_events (
    event_id text PRIMARY KEY,
    topic text NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now()
);
