-- The first answer the policy verified to each escalation (docs/security/database.md, "A copied request row"): which
-- approval request gave it and how. An escalation has one request (the approval service keeps one per action and
-- kind), so a grant, rejection or expiry from another request for the same action, or a grant after this request's
-- rejection or expiry, is refused (`approval_unauthenticated`). Kept as long as the decisions (never forgotten with a
-- task's working state: a late copy would be granted again).
CREATE TABLE answers (
    action_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    task_id text NOT NULL,
    approval_id text NOT NULL,
    answer text NOT NULL CHECK (answer IN ('granted', 'rejected', 'expired')),
    answered_at timestamptz NOT NULL DEFAULT now()
);

-- Grants decided before this release are first answers too (a rejection or expiry before it was not recorded).
INSERT INTO answers (action_id, tenant_id, task_id, approval_id, answer, answered_at)
SELECT DISTINCT ON (action_id) action_id, tenant_id, task_id, substr(key, length('approval:') + 1), 'granted', decided_at
FROM decisions WHERE key LIKE 'approval:%'
ORDER BY action_id, decided_at, key;
