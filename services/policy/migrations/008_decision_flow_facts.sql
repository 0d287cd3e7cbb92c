-- What a later decision of the task reads of an allowed call (`FLOW_FACTS`: its external recipients and amount),
-- kept beside the decision when it is recorded. The flow check read them out of the stored `decided_event` text,
-- parsed again for every earlier decision of the task each time one of its proposals was decided: quadratic in a
-- task's length. NULL for decisions that are not allows, and for decisions recorded before this column (whose
-- facts are still read from their event).
ALTER TABLE decisions ADD COLUMN flow_facts jsonb;
