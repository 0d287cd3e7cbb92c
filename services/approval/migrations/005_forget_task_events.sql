-- What the service saw of each task is the context an approver reads beside a request; it is forgotten once older than
-- ApprovalSettings.task_events_kept_s (two rows a governed action were kept forever). The sweep finds the oldest by when
-- each happened; they come in time order, so a BRIN index is small and cheap to keep.
CREATE INDEX task_events_at ON task_events USING brin (at);
