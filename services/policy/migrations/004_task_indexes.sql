-- A proposal reads its task's earlier decisions (flow facts) and its held reservations (results not seen yet).
CREATE INDEX decisions_task ON decisions (tenant_id, task_id);
CREATE INDEX reservations_task_held ON reservations (tenant_id, task_id) WHERE status = 'reserved';
