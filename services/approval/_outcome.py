"""What became of a granted call, and the earlier grants of a call asked again: read from the results this service keeps.

The approval service keeps every result it reads on `actions.results` among the task's events (`service._result_task_event`,
summary `<status> after <n> attempt(s)[: <error type>: <message>]`). A grant says only that a person approved; these
say whether the call then ran, failed, or was never made because its authorization expired first (the executor was
down or behind longer than authorizations live: docs/operations.md), and, on the request the planner's proposal of the
same call opened again, which earlier approval could not be carried out.
"""

from __future__ import annotations

import re
from typing import Any

from schemas import ReasonCode
from services.approval._task_event_store import TaskEvent, TaskEventStore
from services.approval.domain import ApprovalRecord
from services.approval.repository import ApprovalRepository

__all__ = ["earlier_grants", "outcome_of"]

_RESULT_TYPES = {"tidegate.action.succeeded", "tidegate.action.failed", "tidegate.action.unknown"}
_SUMMARY = re.compile(r"(?P<status>\w+) after (?P<attempts>\d+) attempt\(s\)(?:: (?P<type>[^:]*): (?P<message>.*))?", re.DOTALL)


def _outcome(event: TaskEvent) -> dict[str, Any]:
    """One kept result as the approver reads it: `executed`, `failed`, `unknown`, `expired_unused` or `refused` (no call made)."""
    found = _SUMMARY.fullmatch(event.summary)
    attempts = int(found["attempts"]) if found else None
    reason = found["type"] if found else None
    status = {"succeeded": "executed"}.get(event.outcome or "", event.outcome or "unknown")
    if status == "failed" and attempts == 0:  # the executor refused the authorization: nothing was called
        status = "expired_unused" if reason == ReasonCode.AUTHORIZATION_EXPIRED else "refused"
    return {
        "status": status,
        "reason": reason,
        "message": found["message"] if found else event.summary,
        "attempts": attempts,
        "at": event.at.isoformat(),
    }


async def outcome_of(events: TaskEventStore, record: ApprovalRecord) -> dict[str, Any] | None:
    """What became of a granted request's call once its result arrived; None while none has (or the request is not granted)."""
    if record.kind != "approval" or record.status != "granted":
        return None
    results = [e for e in await events.action_events([record.action_id]) if e.type in _RESULT_TYPES and e.tenant_id == record.tenant_id]
    return _outcome(results[-1]) if results else None


async def earlier_grants(repo: ApprovalRepository, record: ApprovalRecord, context: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Earlier grants of this same call in the task (`context`: its events, as `ApprovalService.context` lists them) never carried out.

    The planner proposes a call again, as a new action, when its authorization expired before any executor ran it; policy
    then escalates it again and this request is the person's second chance. It names the grant that could not be carried
    out, by whom, and why. A call counts as the same one when its tool and args are those the earlier grant authorized.
    """
    found: list[dict[str, Any]] = []
    for event in context:
        if event["type"] != "tidegate.action.failed" or event["action_id"] == record.action_id:
            continue
        unused = _SUMMARY.fullmatch(event["summary"] or "")
        if unused is None or unused["attempts"] != "0" or unused["type"] != ReasonCode.AUTHORIZATION_EXPIRED:
            continue
        earlier = await repo.get_by_action(event["action_id"], tenant_id=record.tenant_id)
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
                f"({unused['message']}): nothing was done, so the call is asked again",
            }
        )
    return found
