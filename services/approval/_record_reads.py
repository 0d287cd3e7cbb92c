"""The entry a call acts on, as the task's own trusted reads of it said: what an approver checks the call against.

A refund names an order; earlier in the task, `lookup_order` (a read of the tenant's system of record, catalog
`untrusted_output: false`) read that order: its payee and amount. The approver reads the call beside that read,
and a key arg the read says otherwise (the call pays `cus_1005`, the order's payee is `cus_1003`) is said, or that
the task never read the entry ("not checked": the figures are the agent's alone).

The entry is the arg the catalog names `facts.record`, else `facts.documentation` (the order a refund cites). A read
is of the entry when one of its args' text values is the entry's id, as the policy matches a failed read
(`services/policy/facts.py`, `FailedRead.entries`). What a read returned is shown only where the service kept it
with the result (`kept_result`); else the read's status is shown, with where to read what it returned.
"""

from __future__ import annotations

import json
from typing import Any

from schemas import ActionResultData, RiskClass, ToolSpec
from servicekit import ToolCatalog
from servicekit.provenance import arg_leaves
from services.approval._task_event_store import RESULT_TYPES, TaskEventStore
from services.approval.domain import ApprovalRecord

__all__ = ["RETURNED_MAX", "kept_result", "record_reads", "trusted_read"]

DECIDED = "tidegate.action.decided"
RETURNED_MAX = 4096  # bytes of JSON a trusted read's result may hold to be kept beside it (a record, not a listing)


def trusted_read(spec: ToolSpec | None) -> bool:
    """A read of the tenant's own system of record (risk `read`, `untrusted_output: false`)."""
    return spec is not None and spec.risk is RiskClass.READ and spec.untrusted_output is False


def kept_result(result: ActionResultData, spec: ToolSpec | None) -> ActionResultData:
    """A result as the service keeps it among the task events: without what the call returned nor its undo plan.

    Except what a trusted read of the system of record returned, when small: the approver of a later call on that
    entry reads it (the order's payee and amount beside the refund).
    """
    returned = result.result if trusted_read(spec) and result.result is not None else None
    if returned is not None and len(json.dumps(returned, default=str)) > RETURNED_MAX:
        returned = None
    return result.model_copy(update={"result": returned, "undo": None})


def _entry(spec: ToolSpec | None, args: dict[str, Any]) -> tuple[str, str] | None:
    """The arg naming the entry the call acts on and its id (None: the tool names none, or the call leaves it out)."""
    arg = (spec.facts.record or spec.facts.documentation) if spec else None
    value: Any = args
    for part in (arg or "").split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if arg is None or not isinstance(value, str | int) or isinstance(value, bool) or value == "":
        return None
    return arg, str(value)


def _compared(call: dict[str, Any], returned: dict[str, Any], names: list[str]) -> list[dict[str, Any]]:
    """The call's key args the read also returned (by name), each with both values and whether they agree."""
    return [
        {"arg": name, "call": call[name], "read": returned[name], "same": call[name] == returned[name]}
        for name in names
        if name in call and name in returned and not isinstance(call[name], dict | list)
    ]


async def record_reads(
    events: TaskEventStore, catalog: ToolCatalog | None, record: ApprovalRecord, key_args: list[str]
) -> dict[str, Any] | None:
    """The entry the call acts on and every trusted read of it the task made, with what each returned; None: no entry.

    The call compared is the one Approve approves: a pending edit's args, else the call's.
    """
    spec = catalog[record.tool] if catalog is not None and record.tool in catalog else None
    call = record.edited_args if record.is_pending and record.edited_args is not None else record.args
    entry = _entry(spec, call)
    if entry is None or record.kind != "approval":
        return None
    arg, entry_id = entry
    task = [e for e in await events.task_events(record.tenant_id, record.task_id) if e.action_id != record.action_id]
    reads = [
        e
        for e in task
        if e.type == DECIDED
        and e.outcome == "allow"
        and trusted_read(catalog[e.tool] if catalog is not None and e.tool in catalog else None)
        and any(isinstance(v, str | int) and not isinstance(v, bool) and str(v) == entry_id for _, v in arg_leaves(e.args or {}))
    ]
    results = {e.action_id: e for e in task if e.type in RESULT_TYPES}
    found: list[dict[str, Any]] = []
    for read in reads:
        result = results.get(read.action_id)
        returned = result.result.result if result is not None and result.result is not None else None
        found.append(
            {
                "tool": read.tool,
                "action_id": read.action_id,
                "status": result.outcome if result is not None else "no result yet",
                "at": (result or read).at.isoformat(),
                "returned": returned,
                "compared": _compared(call, returned or {}, key_args),
            }
        )
    if not found:
        said = f"not checked: the task made no trusted read of {arg} {entry_id}; the figures are the agent's alone"
    elif not any(r["returned"] for r in found):
        said = (
            f"read by {', '.join(r['tool'] for r in found)}; what it returned is not kept here: `tidegate audit explain {record.task_id}`"
        )
    else:
        differs = [c for r in found for c in r["compared"] if not c["same"]]
        said = (
            "the call agrees with the read"
            if not differs
            else "the call differs from the read: "
            + "; ".join(f"{c['arg']} {c['call']!r} in the call, {c['read']!r} as read" for c in differs)
        )
    return {"arg": arg, "id": entry_id, "checked": bool(found), "reads": found, "said": said}
