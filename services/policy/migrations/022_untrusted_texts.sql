-- The text of what a task read from outside (a result of an `untrusted_output` tool, an untrusted field of its request),
-- by where it was read (`provenance.source`): field path → text, `KEPT_TEXT` characters at most (servicekit/provenance.py).
-- An escalation the policy signs quotes the text around each argument value it found in it (`facts.taint[].excerpt`), so
-- the approver reads what the email said beside the call instead of running `tidegate audit explain` (docs/approval.md).
-- Working state, forgotten with the task's other rows (`task_state_kept_s`).
CREATE TABLE untrusted_texts (
    tenant_id text NOT NULL,
    task_id text NOT NULL,
    source text NOT NULL,
    texts jsonb NOT NULL,
    learned_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, task_id, source)
);
CREATE INDEX untrusted_texts_learned_at ON untrusted_texts USING brin (learned_at);
ALTER INDEX untrusted_texts_learned_at SET (autosummarize = on);
