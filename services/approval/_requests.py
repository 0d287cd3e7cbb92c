"""The requests the service opens: one for a policy's escalation, a follow-up for a call whose outcome is unknown."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from schemas import ActionDecidedData, ActionResultData, Reason, ReasonCode, action_identity
from servicekit import action_digest
from services.approval._approval_record import ApprovalRecord
from services.approval._groups import GroupsConfig

__all__ = ["follow_up_fields", "follow_up_from_result", "opens_request", "refresh_request", "request_from_decision"]


def opens_request(decided: ActionDecidedData) -> bool:
    """Whether a decision asks a human: an escalation by policy (a re-evaluation after a grant never does)."""
    return decided.outcome == "escalate" and decided.via == "policy"


def request_from_decision(
    decided: ActionDecidedData,
    *,
    approval_id: str,
    now: datetime,
    ttl: timedelta,
    groups: GroupsConfig,
    risk: str,
    decision: str | None = None,
) -> ApprovalRecord | None:
    """A pending request for an escalation by policy; None for anything else.

    `risk` is the tool's class in the approval service's own catalog, never the event's claim: it
    picks who may approve and how many must agree. `decision`: the policy's event as received (its signed text), kept
    so that what is shown of the request is checked against it (`_decision_proofs`). A re-evaluation after a grant
    (`via == "approval"`) never opens a new request: its outcome is the policy service's answer to
    the human, not a new question.
    """
    if not opens_request(decided):
        return None
    return ApprovalRecord(
        approval_id=approval_id,
        **action_identity(decided),
        tool=decided.tool,
        args=decided.args,
        action_digest=decided.action_digest,
        reasons=decided.reasons,
        facts=decided.facts,
        risk=risk,
        policy_version=decided.policy_version,
        requested_by=decided.requested_by,
        task_requested_by=decided.task_requested_by,
        proposer=decided.proposer,
        rationale=decided.rationale,
        estimated_cost_usd=decided.estimated_cost_usd,
        # The tenant's triggers may ask for more approvers than the risk class (the policy records it); never fewer.
        required_approvals=max(groups.required(decided.tenant_id, risk), _asked_by_policy(decided.facts)),
        created_at=now,
        expires_at=now + ttl,
        decision=decision,
    )


def _asked_by_policy(facts: dict[str, Any]) -> int:
    """`facts.approvers_required` of the decision (the tenant's trigger choice), 1 when absent or malformed."""
    value = facts.get("approvers_required", 1)
    return min(10, value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def refresh_request(existing: ApprovalRecord, fresh: ApprovalRecord) -> ApprovalRecord | None:
    """The stored request after a redelivered or re-proposed escalation of the same action.

    The same call again changes nothing (None). A changed call (another digest) replaces the pending
    request's call, with what follows from it in `fresh` (the tool, its risk class and the approvals it
    needs, as `request_from_decision` computed them), and clears the votes so far, each with the groups
    it signed: a grant must bind to what the approvers saw, and a human who saw the old call is refused
    by the digest check.
    """
    if not existing.is_pending or existing.action_digest == fresh.action_digest:
        return None
    return existing.model_copy(
        update={
            "tool": fresh.tool,
            "args": fresh.args,
            "action_digest": fresh.action_digest,
            "reasons": fresh.reasons,
            "facts": fresh.facts,
            "risk": fresh.risk,
            "policy_version": fresh.policy_version,
            "estimated_cost_usd": fresh.estimated_cost_usd,
            "proposer": fresh.proposer,  # why and by whom the new call was proposed: the decision kept below says so
            "rationale": fresh.rationale,
            "task_requested_by": existing.task_requested_by or fresh.task_requested_by,  # learned since: four eyes binds them too
            "required_approvals": fresh.required_approvals,
            "decision": fresh.decision,
            "approvers": [],
            "approver_groups": {},
            "approved_via": {},
            "edited_args": None,
            "votes": [v.model_copy(update={"counted": False}) for v in existing.votes],  # kept: they approved the call replaced
            "version": existing.version + 1,
        }
    )


def follow_up_from_result(
    result: ActionResultData,
    *,
    approval_id: str,
    now: datetime,
    ttl: timedelta,
    risk: str,
    requested_by: str | None,
    args: dict[str, Any],
    requested_call: ApprovalRecord | None = None,
    result_event: str | None = None,
) -> ApprovalRecord:
    """A follow-up for a call whose outcome is unknown: a human finds out what happened and records it.

    `result_event`: the executor's `action.unknown` as received (its signed text), kept so that a follow-up is shown and
    resolved only while it is proven to be one (`_decision_proofs`): the database login cannot make one of a request.
    """
    return ApprovalRecord(
        approval_id=approval_id,
        kind="follow_up",
        **action_identity(result),
        **follow_up_fields(result),
        args=args,
        action_digest=action_digest(result.tenant_id, result.tool, args),
        risk=risk,
        policy_version=requested_call.policy_version if requested_call else "",
        requested_by=requested_by,
        task_requested_by=requested_call.task_requested_by if requested_call else None,
        required_approvals=1,
        created_at=now,
        expires_at=now + ttl,
        decision=result_event,
    )


def follow_up_fields(result: ActionResultData) -> dict[str, Any]:
    """What a follow-up copies from the executor's unknown outcome: the tool, why a human is asked, the attempts, the error."""
    message = "the call may or may not have taken effect; check the system of record and record what happened (never retry blindly)"
    return {
        "tool": result.tool,
        "reasons": [Reason(code=ReasonCode.OUTCOME_UNKNOWN, policy_id="executor", message=message)],
        "facts": {"attempts": result.attempts, "duration_ms": result.duration_ms, "idempotency_key": result.idempotency_key},
        "result_error": result.error.model_dump() if result.error else None,
    }
