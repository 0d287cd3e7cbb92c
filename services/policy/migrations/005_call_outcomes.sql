-- How each call of a task ended (from actions.results): the rubric's escalation on repeated retries and
-- tool errors counts a task's attempts beyond the first and its failed or unknown calls.
CREATE TABLE call_outcomes (
    action_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    task_id text NOT NULL,
    status text NOT NULL,
    attempts integer NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX call_outcomes_by_task ON call_outcomes (tenant_id, task_id);
