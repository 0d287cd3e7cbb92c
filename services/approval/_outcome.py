"""What became of a granted call, and the earlier grants of a call asked again: read from the results this service keeps.

The approval service keeps every result it reads on `actions.results` among the task's events, with the result's
fields (`TaskEvent.result`). A grant says only that a person approved; these say whether the call then ran, failed,
or was never made (`ActionResultData.refusal`, the schemas' one rule: failed with 0 attempts), for instance because
its authorization expired first (the executor was down or behind longer than authorizations live:
docs/operations.md), and, on the request the planner's proposal of the same call opened again, which earlier
approval could not be carried out. A grant is also re-evaluated by the policy service before anything runs; a deny
then (`action.decided` via `approval`, such as `approval_quorum_not_met` after the tenant raised its quorum) ends it,
and is what became of it: `denied_by_policy`, with the policy's reason codes.
"""

from __future__ import annotations

from typing import Any

from schemas import ActionResultData, ReasonCode
from services.approval._task_event_store import RESULT_TYPES, TaskEvent, TaskEventStore
from services.approval.domain import ApprovalRecord
from services.approval.repository import ApprovalRepository

__all__ = ["earlier_grants", "outcome_of"]

FAILED = "tidegate.action.failed"
DECIDED = "tidegate.action.decided"
DENIED_VIA_APPROVAL = "deny via approval"  # how a kept decision's summary opens for a grant the policy then denied (service.py)


def _status(result: ActionResultData) -> str:
    """`executed`, `failed`, `unknown`, or for a refusal (no call made) `expired_unused` or `refused`."""
    refusal = result.refusal
    if refusal is None:
        return {"succeeded": "executed"}.get(result.status, result.status)
    return "expired_unused" if refusal == ReasonCode.AUTHORIZATION_EXPIRED else "refused"


def _outcome(event: TaskEvent) -> dict[str, Any]:
    """One kept result as the approver reads it: `executed`, `failed`, `unknown`, `expired_unused` or `refused` (no call made)."""
    result = event.result
    if result is None:  # kept before migration 012 with a summary that does not read as a result: shown as it was kept
        status = {"succeeded": "executed"}.get(event.outcome or "", event.outcome or "unknown")
        return {"status": status, "reason": None, "message": event.summary, "attempts": None, "at": event.at.isoformat()}
    return {
        "status": _status(result),
        "reason": result.error.type if result.error else None,
        "message": result.error.message if result.error else None,
        "attempts": result.attempts,
        "at": event.at.isoformat(),
    }


def _denied(event: TaskEvent) -> dict[str, Any]:
    """The policy's deny of the grant, as the approver reads it: its reason codes (the kept decision holds their codes only)."""
    codes = [c.strip() for c in event.summary.partition(":")[2].split(",") if c.strip()]
    said = ", ".join(codes) or "no reason given"
    return {
        "status": "denied_by_policy",
        "reason": codes[0] if codes else None,
        "message": f"denied by policy after the grant: {said}; nothing ran (`tidegate audit explain {event.task_id}`: the policy's words)",
        "attempts": 0,
        "at": event.at.isoformat(),
    }


def _ends_grant(event: TaskEvent) -> bool:
    """A result of the call, or the policy's deny of the grant on re-evaluation: either says what became of it."""
    if event.type in RESULT_TYPES:
        return True
    return event.type == DECIDED and event.outcome == "deny" and event.summary.startswith(DENIED_VIA_APPROVAL)


async def outcome_of(events: TaskEventStore, record: ApprovalRecord) -> dict[str, Any] | None:
    """What became of a granted request's call: its result, or the policy's deny of the grant; None while neither has arrived."""
    if record.kind != "approval" or record.status != "granted":
        return None
    ended = [e for e in await events.action_events([record.action_id]) if e.tenant_id == record.tenant_id and _ends_grant(e)]
    if not ended:
        return None
    return _denied(ended[-1]) if ended[-1].type == DECIDED else _outcome(ended[-1])


async def earlier_grants(repo: ApprovalRepository, record: ApprovalRecord, context: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Earlier grants of this same call in the task (`context`: its events, as `ApprovalService.context` lists them) never carried out.

    The planner proposes a call again, as a new action, when its authorization expired before any executor ran it; policy
    then escalates it again and this request is the person's second chance. It names the grant that could not be carried
    out, by whom, and why. A call counts as the same one when its tool and args are those the earlier grant authorized.
    The context names the task's failed actions; their results are read from the store with their fields.
    """
    failed = sorted({e["action_id"] for e in context if e["type"] == FAILED and e["action_id"] != record.action_id})
    found: list[dict[str, Any]] = []
    for event in await repo.action_events(failed) if failed else []:
        result = event.result
        if event.type != FAILED or (event.tenant_id, event.task_id) != (record.tenant_id, record.task_id) or result is None:
            continue
        if result.refusal != ReasonCode.AUTHORIZATION_EXPIRED:
            continue
        earlier = await repo.get_by_action(event.action_id, tenant_id=record.tenant_id)
        if earlier is None or earlier.status != "granted" or earlier.tool != record.tool:
            continue
        if (earlier.edited_args if earlier.edited_args is not None else earlier.args) != record.args:
            continue
        found.append(
            {
                "approval_id": earlier.approval_id,
                "action_id": earlier.action_id,
                "approvers": list(earlier.approvers),
                "decided_at": earlier.decided_at.isoformat() if earlier.decided_at else None,
                "why": f"approved by {', '.join(earlier.approvers) or '?'}, but its authorization expired before the executor ran it "
                f"({result.error.message if result.error else ''}): nothing was done, so the call is asked again",
            }
        )
    return found
