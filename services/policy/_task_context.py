"""What a decision knows of its task: what the task's request vouches for, what it read and did, and whose it is.

Values only: the policy service loads them (`PolicyService._task_contexts`) and the pure decision reads them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from schemas import OUR_PLANNER, ActionProposedData, Mode, TaskSubmittedData, ToolSpec
from servicekit.provenance import Provenance, task_input_source, texts_of
from servicekit.undo import UndoUnavailable, resolve
from services.policy.facts import Call, FailedRead, Flow, SystemRecord
from services.policy.repository import TaskInput

__all__ = ["TaskContext", "is_undo_of", "task_input"]


@dataclass(frozen=True)
class TaskContext:
    """What a task has read (provenance, entries of the system of record) and done (its flow), loaded before a decision."""

    provenance: Provenance
    flow: Flow
    records: Mapping[str, SystemRecord]
    failed_reads: Mapping[str, FailedRead] = field(default_factory=dict)  # entries whose read failed, by id
    mode: Mode | None = None  # the mode the task's signed request asked for; None: no task learned (`_context`)
    requested_by: str | None = None  # who the task's signed request names; None: no task learned (four eyes binds them too)
    # Whose the task is: the requester its signed request names and those its earlier proposals named (undos left out).
    # One name: the task's; several: two requesters used the id, and nothing more is decided in it (`owned_by_another`).
    owners: frozenset[str] = frozenset()
    planned_here: bool | None = None  # its first request asked Tidegate's planner to plan it

    def owned_by_another(self, proposal: ActionProposedData, *, planner: bool, undo: bool = False) -> str | None:
        """Whose the task is, when `proposal` may not act in it; else None.

        A task Tidegate's planner plans is its requester's alone: an outside agent's proposal in it is denied, and a
        planner's proposal naming another requester than the one learned (or one after another's proposals) means two
        requesters used its id. A task an outside agent plans its requester delegated to that agent, whose own key
        signs (`requested_by` its principal): any of the tenant's agents may propose in it, as before. With `undo`
        (the proposal is the catalog's undo of a call of this task, `is_undo_of`) it is any of the tenant's people's to ask.
        """
        if undo or proposal.requested_by is None or (not self.planned_here and not planner):
            return None
        owners = self.owners | {proposal.requested_by}
        if len(owners) == 1:
            return None
        return ", ".join(sorted(self.owners)) if len(self.owners) == 1 else ", ".join(sorted(owners))

    def named_by(self, proposal: ActionProposedData) -> TaskContext:
        """This context once `proposal` is recorded: its requester among the task's owners, unless it is an undo (which claims nothing)."""
        if proposal.requested_by is None or proposal.undoes is not None or proposal.requested_by in self.owners:
            return self
        return dataclasses.replace(self, owners=self.owners | {proposal.requested_by})

    def of(self, call: Call) -> Call:
        """`call` with its task's context: what it read and did, and the mode its request asked for (the proposal's is at most it)."""
        return dataclasses.replace(
            call, provenance=self.provenance, flow=self.flow, records=self.records, failed_reads=self.failed_reads, task_mode=self.mode
        )


def is_undo_of(spec: ToolSpec | None, original: ActionProposedData, proposal: ActionProposedData) -> bool:
    """Whether `proposal` is the undo of `original` as its catalog entry `spec` names it.

    That tool, and each argument the entry takes from the original call's args (`args.<path>`) equal to it. Arguments
    from its result or the state read before it are not known here: the executor's plan computed them, and the policy
    decides the call on its merits.
    """
    undo = spec.undo if spec is not None else None
    if undo is None or undo.tool is None or undo.tool != proposal.tool:
        return False
    for name, source in undo.args.items():
        if isinstance(source, str) and source.startswith("args."):
            try:
                expected = resolve(source, {"args": original.args})
            except UndoUnavailable:
                return False
            if proposal.args.get(name) != expected:
                return False
    return True


def task_input(data: TaskSubmittedData) -> TaskInput:
    """What a task's request vouches for (its trusted input) and what its untrusted fields carry."""
    marked = data.untrusted_keys  # the client's marks and the workflow's own (a ticket's subject and body)
    untrusted = {k: v for k, v in data.input.items() if k in marked}
    trusted = {k: v for k, v in data.input.items() if k not in marked}
    values: dict[str, str] = {}  # a value in several untrusted fields keeps the first one's source
    texts: dict[str, dict[str, str]] = {}  # each field's text, to quote beside a call that carries a value of it
    for key, value in untrusted.items():
        source = task_input_source(key)
        for v, where in Provenance().learn(value, source).items():
            values.setdefault(v, where)
        texts[source] = texts_of({key: value})
    vouched = Provenance().learn(trusted, "the task's request", trusted=True)
    planned_here = data.planner == OUR_PLANNER
    return TaskInput(
        data.tenant_id,
        data.task_id,
        vouched,
        values,
        request=True,
        mode=data.mode,
        requested_by=data.requested_by,
        planned_here=planned_here,
        texts=texts,
    )
