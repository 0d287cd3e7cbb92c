-- Who a task's request names (`task.submitted`, signed by the requester's client): four eyes binds them, not only the
-- proposal's `requested_by`, which an outside agent's proposal must give as its own signer's principal. The first
-- request's is kept (the one the task is planned for); a second request of the same task names nobody new. Rows from
-- before this migration have none: their approval requests bind the proposal's requester only. docs/approval.md, "Four eyes".
ALTER TABLE tasks_learned ADD COLUMN requested_by text;
