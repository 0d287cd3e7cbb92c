"""The approval service's decisions, as pure functions: who may decide what, and what follows.

Nothing here does I/O. A request is an `ApprovalRecord`; a human's vote on it either is refused
(`Refusal`, with the HTTP status an API answers with) or yields a `Transition`: the new record and,
when the request is settled, the decision event type to publish.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from schemas import ActionDecidedData, ActionResultData, ApprovalData, ApprovalVote, Reason, ReasonCode, action_identity
from servicekit import SigningKey, action_digest, approval_message
from servicekit.approver_groups import counts
from servicekit.people import same_person

__all__ = [
    "DEFAULT_GROUPS",
    "ApprovalRecord",
    "Approver",
    "Ballot",
    "GroupsConfig",
    "Refusal",
    "TenantGroups",
    "Transition",
    "Vote",
    "already_settled",
    "approvals_of",
    "check_access",
    "cost_so_far",
    "decide",
    "edit_pending",
    "escalate",
    "expire",
    "follow_up_from_result",
    "has_approved",
    "not_found",
    "opens_request",
    "pending_editor",
    "refresh_request",
    "request_from_decision",
    "requesters",
    "second_vote_without_token",
    "signed_decision",
    "unsigned_request",
]

Status = Literal["pending", "granted", "rejected", "expired", "resolved"]
Kind = Literal["approval", "follow_up"]
Via = Literal["token", "link", "callback"]
Resolution = Literal["confirmed_done", "confirmed_not_done"]
GRANTED, REJECTED, EXPIRED, REQUESTED, RESOLVED = (
    "tidegate.approval.granted",
    "tidegate.approval.rejected",
    "tidegate.approval.expired",
    "tidegate.approval.requested",
    "tidegate.approval.resolved",
)
EDITED = "tidegate.approval.edited"  # a webhook message only (no bus event): the call a pending request awaits approval of changed
UNKNOWN_RISK = "unknown"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Ballot(_Frozen):
    """The approval service's proof of one counted approval of a request: the key that signed it and the signature."""

    key_id: str
    signature: str


class ApprovalRecord(_Frozen):
    """One request for a human: an escalated call awaiting approval, or an unknown outcome to follow up."""

    approval_id: str
    kind: Kind = "approval"
    action_id: str
    task_id: str
    tenant_id: str
    step: int = 0
    tool: str
    args: dict[str, Any]
    action_digest: str
    reasons: list[Reason] = Field(default_factory=list)
    facts: dict[str, Any] = Field(default_factory=dict)
    risk: str = UNKNOWN_RISK
    policy_version: str = ""
    requested_by: str | None = None  # the task's requester as the proposal names it (an outside agent's: the agent)
    task_requested_by: str | None = None  # as its signed request names it, when the policy learned the task (four eyes: both)
    proposer: str | None = None
    rationale: str = ""  # why the agent proposed it, as it wrote it (untrusted: shown as text)
    estimated_cost_usd: float = 0.0
    status: Status = "pending"
    required_approvals: int = 1
    approvers: list[str] = Field(default_factory=list)
    approver_groups: dict[str, list[str]] = Field(default_factory=dict)  # approver → groups held when they voted
    approved_via: dict[str, Via] = Field(default_factory=dict)  # approver → how their counted approval came (absent: a token)
    # approver → the service's signature of their counted approval (`_ballots`): the database cannot add one of its own
    ballots: dict[str, Ballot] = Field(default_factory=dict)
    edited_args: dict[str, Any] | None = None
    comment: str | None = None
    review_reason: str | None = None  # why a human rejected or edited (the tenant's taxonomy)
    votes: list[ApprovalVote] = Field(default_factory=list)  # every vote in order, each with its comment and reason (none before)
    decided_by: str | None = None
    decided_at: datetime | None = None
    resolution: Resolution | None = None
    result_error: dict[str, Any] | None = None
    created_at: datetime
    expires_at: datetime
    escalated_at: datetime | None = None
    version: int = 0
    traceparent: str | None = None  # trace of the escalation, so a human's decision continues the task's trace

    @property
    def is_pending(self) -> bool:
        """Whether a human can still act on it."""
        return self.status == "pending"


class TenantGroups(_Frozen):
    """Approver groups of one tenant: who may approve each risk class, and how many must agree."""

    risk_groups: dict[str, list[str]] = Field(default_factory=dict, description="Risk class → groups whose members may approve.")
    escalation_groups: dict[str, list[str]] = Field(default_factory=dict, description="Risk class → groups added once a request escalates.")
    required_approvals: dict[str, int] = Field(default_factory=dict, description="Risk class → distinct approvals needed (default 1).")


DEFAULT_GROUPS = TenantGroups(
    risk_groups={
        "financial": ["finance"],
        "destructive": ["security"],
        "draft": ["support"],
        "code_change": ["engineering"],
        "write_low": ["support"],
        "read": ["support"],
        UNKNOWN_RISK: ["security"],
    },
    escalation_groups={"financial": ["finance-leads"], "destructive": ["security-leads"]},
    required_approvals={"destructive": 2},
)


class GroupsConfig(_Frozen):
    """Approver groups per tenant (a tenant without its own entry uses `default`)."""

    default: TenantGroups = DEFAULT_GROUPS
    tenants: dict[str, TenantGroups] = Field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None) -> GroupsConfig:
        """Read the YAML file (see docs/approval.md), or the built-in default when `path` is None."""
        if path is None:
            return cls()
        return cls.model_validate(yaml.safe_load(path.read_text()) or {})

    def for_tenant(self, tenant_id: str) -> TenantGroups:
        """The tenant's groups, or the default ones."""
        return self.tenants.get(tenant_id, self.default)

    def allowed_groups(self, tenant_id: str, risk: str, *, escalated: bool) -> set[str]:
        """Groups whose members may decide a request of this risk class (unknown classes: the `unknown` entry)."""
        groups = self.for_tenant(tenant_id)
        allowed = set(groups.risk_groups.get(risk, groups.risk_groups.get(UNKNOWN_RISK, [])))
        if escalated:
            allowed |= set(groups.escalation_groups.get(risk, []))
        return allowed

    def required(self, tenant_id: str, risk: str) -> int:
        """Distinct approvals a grant of this risk class needs."""
        return max(1, self.for_tenant(tenant_id).required_approvals.get(risk, 1))


class Approver(_Frozen):
    """An authenticated human, with the tenant and groups their credential gives them."""

    approver: str
    tenant_id: str
    groups: frozenset[str] = frozenset()
    via: Via = "token"
    operator: bool = False

    def may_see(self, tenant_id: str) -> bool:
        """Approvers see their own tenant's queue only; an operator token (made by the operator CLI) sees every tenant's."""
        return self.operator or self.tenant_id == tenant_id


class Vote(_Frozen):
    """What a human asks for: approve (possibly with edited args) or reject, having seen a given call."""

    decision: Literal["approve", "reject"]
    comment: str | None = None
    review_reason: str | None = None
    seen_digest: str | None = None
    edited_args: dict[str, Any] | None = None
    replace_edit: bool = False  # approve another call than another approver's pending edit, knowingly (with a comment: `edit_pending`)


class Refusal(_Frozen):
    """Why a vote is not accepted, with the HTTP status to answer."""

    code: str
    status: int
    message: str


class Transition(_Frozen):
    """A vote's effect: the record after it, and the decision event to publish (None while more votes are needed).

    `EDITED` is a webhook message only: a partial vote changed the call the request awaits approval of.
    """

    record: ApprovalRecord
    event_type: str | None = None


def opens_request(decided: ActionDecidedData) -> bool:
    """Whether a decision asks a human: an escalation by policy (a re-evaluation after a grant never does)."""
    return decided.outcome == "escalate" and decided.via == "policy"


def request_from_decision(
    decided: ActionDecidedData, *, approval_id: str, now: datetime, ttl: timedelta, groups: GroupsConfig, risk: str
) -> ApprovalRecord | None:
    """A pending request for an escalation by policy; None for anything else.

    `risk` is the tool's class in the approval service's own catalog, never the event's claim: it
    picks who may approve and how many must agree. A re-evaluation after a grant
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
            "task_requested_by": existing.task_requested_by or fresh.task_requested_by,  # learned since: four eyes binds them too
            "required_approvals": fresh.required_approvals,
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
) -> ApprovalRecord:
    """A follow-up for a call whose outcome is unknown: a human finds out what happened and records it."""
    error = result.error.model_dump() if result.error else None
    message = "the call may or may not have taken effect; check the system of record and record what happened (never retry blindly)"
    return ApprovalRecord(
        approval_id=approval_id,
        kind="follow_up",
        **action_identity(result),
        tool=result.tool,
        args=args,
        action_digest=action_digest(result.tenant_id, result.tool, args),
        reasons=[Reason(code=ReasonCode.OUTCOME_UNKNOWN, policy_id="executor", message=message)],
        facts={"attempts": result.attempts, "duration_ms": result.duration_ms, "idempotency_key": result.idempotency_key},
        risk=risk,
        policy_version=requested_call.policy_version if requested_call else "",
        requested_by=requested_by,
        task_requested_by=requested_call.task_requested_by if requested_call else None,
        required_approvals=1,
        result_error=error,
        created_at=now,
        expires_at=now + ttl,
    )


def _refuse(code: str, status: int, message: str) -> Refusal:
    return Refusal(code=code, status=status, message=message)


def not_found(approval_id: str) -> Refusal:
    """The answer for an id that does not exist and for one of another tenant alike, so a stranger learns nothing."""
    return _refuse("not_found", 404, f"no approval {approval_id}")


def has_approved(record: ApprovalRecord, approver: str) -> bool:
    """Whether `approver` (in any spelling of case) is among the approvals counted so far."""
    return any(same_person(approver, a) for a in record.approvers)


def second_vote_without_token(record: ApprovalRecord, who: Approver, vote: Vote) -> Refusal | None:
    """Why an approve through a one-time link or a chat callback is refused: another such approval already counts toward the quorum.

    A request that needs two or more approvals takes at most one of them without the approver's own token.
    Links and callbacks are bearer credentials that travel together: one webhook message carries every
    approver's link, and whoever holds the endpoint's secret signs callbacks in any of its approvers' names.
    Whoever holds the message (a chat channel, a log) would otherwise meet a two-person rule alone.
    """
    if vote.decision != "approve" or who.via == "token" or record.required_approvals < 2 or vote.edited_args != record.edited_args:
        return None  # a reject settles alone anyway; other edited args restart the count with this one approval
    if has_approved(record, who.approver):
        return None  # their approval counts already: `already_approved` says so
    if not any(record.approved_via.get(a, "token") != "token" for a in record.approvers):
        return None
    return _refuse(
        "own_token_needed",
        403,
        f"this request needs {record.required_approvals} approvals and takes at most one through a one-time link or chat, which it "
        "has (two-person rule): sign in with your API token to approve (the page with your token, or `tidegate approvals approve`)",
    )


def pending_editor(record: ApprovalRecord) -> ApprovalVote | None:
    """The counted vote that made a pending request's edit (its `edited_args`): who edited, when, with their comment and reason."""
    if record.edited_args is None:
        return None
    return next((v for v in record.votes if v.counted and v.decision == "approve" and v.edited_args == record.edited_args), None)


def edit_pending(record: ApprovalRecord, who: Approver, vote: Vote) -> Refusal | None:
    """Why an approve is refused: it is for another call than another approver's pending edit, which it would discard unasked.

    Counting it would restart the count with this vote alone and drop the edit and every approval of it. Over the API (the
    approver's own token) that takes `replace_edit` and a comment saying why, and the editor is told (`votes`, the webhook
    message `approval.edited`); a one-time link or a chat callback cannot replace an edit (a chat message may not have shown
    it): the approver concurs with the edit (the same edited args) or opens the page with their token.
    """
    if vote.decision != "approve" or record.kind != "approval" or record.edited_args is None:
        return None
    proposed = None if vote.edited_args == record.args else vote.edited_args
    others = [a for a in record.approvers if not same_person(a, who.approver)]
    if proposed == record.edited_args or not others:
        return None
    edit = pending_editor(record)
    editor = edit.approver if edit is not None else others[0]
    why = f" (reason {edit.review_reason})" if edit is not None and edit.review_reason else ""
    said = f": {edit.comment!r}" if edit is not None and edit.comment else ""
    args = json.dumps(record.edited_args, sort_keys=True, ensure_ascii=True)
    args = args if len(args) <= 300 else args[:299] + "…"
    what = "the original call" if proposed is None else "other edited args"
    head = (
        f"{editor} approved this call with edited args {args}{why}{said}; your approval is for {what} and would discard that edit "
        f"and {len(others)} approval(s) of it"
    )
    if who.via == "callback":
        return _refuse(
            "edit_pending",
            409,
            f"{head}: a chat callback cannot replace an edit; concur by sending these edited_args, or open the request's page "
            "(page_url) signed in with your API token to see the edit and concur or replace it",
        )
    if who.via == "link":
        return _refuse(
            "edit_pending",
            409,
            f"{head}: a one-time link cannot replace an edit; approve the edited args the page shows to concur, or sign in with your "
            "API token to replace the edit",
        )
    if not vote.replace_edit:
        return _refuse(
            "edit_pending",
            409,
            f'{head}: to concur, approve with the same edited_args; to replace the edit, approve again with "replace_edit": true and a '
            f"comment saying why (CLI: --replace-edit -m …); {editor} is told",
        )
    if not (vote.comment or "").strip():
        return _refuse("comment_required", 422, f"replacing {editor}'s edit needs a comment saying why: {editor} is told")
    return None


def approvals_of(record: ApprovalRecord) -> list[str]:
    """Who approved: a rejected request's approvals given before it was rejected (never its rejecter); otherwise `approvers`."""
    if record.status != "rejected":
        return list(record.approvers)
    return [v.approver for v in record.votes if v.decision == "approve" and v.counted]


def already_settled(record: ApprovalRecord) -> str:
    """Why a request that is no longer pending cannot be decided: its status, who settled it and when."""
    message = f"approval {record.approval_id} is already {record.status}"
    if record.decided_by:
        message += f" by {record.decided_by}"
    if record.decided_at is not None:
        message += f" at {record.decided_at.isoformat(timespec='seconds')}"
    return message


def requesters(record: ApprovalRecord) -> tuple[str, ...]:
    """Who may not approve `record` (four eyes): the requester its proposal names and the one its task's signed request names.

    An outside agent's proposal names the agent (it signs it); the task's requester is the human who submitted the task.
    """
    return tuple(r for r in (record.requested_by, record.task_requested_by) if r)


def check_access(
    record: ApprovalRecord, who: Approver, groups: GroupsConfig, *, rejecting: bool = False, counted: Collection[str] = ()
) -> Refusal | None:
    """Whether `who` may decide `record` at all, in this order: tenant, known requester, group, four eyes, counted; None when they may.

    Another tenant's request is `not_found`, exactly as a missing one. Four eyes binds both requesters a request names
    (`requesters`): the proposal's and the task's signed request's. It needs one of them:
    nobody approves a request whose requester is unknown; it stays pending until an operator token
    rejects it (fail closed) or it expires. `counted` are the groups whose approvals the policy service
    counts for the request's class under the tenant's settings (`servicekit.approver_groups`; none:
    anyone's): an approve by anyone else is refused, since the grant it made would be denied
    `approval_quorum_not_met`; a reject, which settles alone, is not.
    """
    if not who.may_see(record.tenant_id):
        return not_found(record.approval_id)
    if record.kind == "approval" and not requesters(record):
        if rejecting and who.operator:
            return None  # the one way out that is not a wait: an operator rejects it (fail closed)
        return _refuse(
            "requester_unknown",
            409,
            "the requester of this task is unknown, so four eyes cannot be checked and nobody may approve it; "
            "it stays pending until an operator rejects it or it expires (docs/approval.md)",
        )
    allowed = groups.allowed_groups(record.tenant_id, record.risk, escalated=record.escalated_at is not None)
    if not allowed & who.groups:
        return _refuse(
            "not_in_group",
            403,
            f"{record.risk} actions of {record.tenant_id} need a member of {sorted(allowed) or 'no group'}; "
            f"{who.approver} is in {sorted(who.groups) or 'none'}",
        )
    if any(same_person(who.approver, r) for r in requesters(record)):
        return _refuse("four_eyes", 403, f"{who.approver} requested this task and may not approve its actions (four eyes)")
    if record.kind == "approval" and not rejecting and not counts(counted, who.groups):
        return _refuse(
            "groups_not_counted",
            403,
            f"your approval would not count: the tenant's settings require a member of {sorted(counted)} for {record.risk} calls "
            f"(approver_groups); {who.approver} is in {sorted(who.groups) or 'none'}",
        )
    return None


def decide(
    record: ApprovalRecord, who: Approver, vote: Vote, *, now: datetime, groups: GroupsConfig, counted: Collection[str] = ()
) -> Transition | Refusal:
    """Apply one human's vote to a request, or say why it is refused.

    Order matters: access first (so a stranger learns nothing), then state, expiry and the digest.
    With several required approvals, each distinct approver's grant counts once (one person in any
    spelling, as four eyes does: `servicekit.people`), and at most one of them may come without the
    approver's own token (`second_vote_without_token`); edited args that differ from the ones already approved
    restart the count with this approver, since the others approved a different call, while "edited"
    args equal to the call are no edit; a vote that would so discard another approver's pending edit is refused unless
    it says so (`edit_pending`). One reject settles the request. Every vote is kept (`votes`), with its comment and reason.
    `counted`: as `check_access`.
    """
    refused = check_access(record, who, groups, rejecting=vote.decision == "reject", counted=counted)
    if refused:
        return refused
    if not record.is_pending:
        return _refuse("not_pending", 409, already_settled(record))
    if now >= record.expires_at:
        return _refuse("expired", 409, f"approval {record.approval_id} expired at {record.expires_at.isoformat()}")
    if vote.seen_digest is not None and vote.seen_digest != record.action_digest:
        return _refuse("digest_mismatch", 409, "the call changed since you saw it; reload and decide on the current call")
    if action_digest(record.tenant_id, record.tool, record.args) != record.action_digest:
        return _refuse("digest_mismatch", 409, "the stored call no longer matches its digest; refusing to grant it")
    if record.kind == "follow_up":
        if vote.edited_args is not None:
            return _refuse("edit_not_allowed", 422, "a follow-up records what happened; it has no args to edit")
        resolution: Resolution = "confirmed_done" if vote.decision == "approve" else "confirmed_not_done"
        return Transition(record=_settled(record, "resolved", who, vote, now, resolution=resolution), event_type=RESOLVED)
    if vote.decision == "reject":
        return Transition(record=_settled(record, "rejected", who, vote, now), event_type=REJECTED)
    if vote.edited_args is not None and vote.edited_args == record.args:
        vote = vote.model_copy(update={"edited_args": None})  # "edited" to the call itself: a plain approve, which keeps the votes
    if has_approved(record, who.approver) and vote.edited_args == record.edited_args:
        return _refuse(
            "already_approved", 409, f"{who.approver} already approved; {record.required_approvals} distinct approvals are needed"
        )
    refused = edit_pending(record, who, vote) or second_vote_without_token(record, who, vote)
    if refused:
        return refused
    same_call = vote.edited_args == record.edited_args
    approvers = [*record.approvers, who.approver] if same_call else [who.approver]
    # The groups each approver held, signed into the grant: the policy service counts only the groups its settings require.
    held = (dict(record.approver_groups) if same_call else {}) | {who.approver: sorted(who.groups)}
    via = (dict(record.approved_via) if same_call else {}) | ({who.approver: who.via} if who.via != "token" else {})
    votes = _votes_after(record, who, vote, now, restart=not same_call)
    counted = {"approvers": approvers, "approver_groups": held, "approved_via": via, "votes": votes}
    if len(approvers) < record.required_approvals:
        partial = record.model_copy(update=counted | {"edited_args": vote.edited_args, "version": record.version + 1})
        return Transition(record=partial, event_type=None if same_call else EDITED)  # another call awaits approval: told to the chat
    granted = _settled(record, "granted", who, vote, now, votes=votes).model_copy(update=counted)
    return Transition(record=granted, event_type=GRANTED)


def _votes_after(record: ApprovalRecord, who: Approver, vote: Vote, now: datetime, *, restart: bool) -> list[ApprovalVote]:
    """`record`'s votes and this one: a vote of the same person before it no longer counts, nor (a restart) any approval before it."""
    kept = []
    for v in record.votes:
        if v.counted and (same_person(v.approver, who.approver) or (restart and v.decision == "approve")):
            v = v.model_copy(update={"counted": False, "replaced_by": who.approver})
        kept.append(v)
    # A plain approve gives no reason (there is nothing to say why about); an edit's or a reject's reason is kept.
    reason = vote.review_reason if vote.decision == "reject" or vote.edited_args is not None else None
    cast = ApprovalVote(
        approver=who.approver,
        decision=vote.decision,
        via=who.via,
        at=now,
        comment=vote.comment,
        review_reason=reason,
        edited_args=vote.edited_args if vote.decision == "approve" else None,
    )
    return [*kept, cast]


def _edit_reason(votes: Iterable[ApprovalVote], edited_args: dict[str, Any] | None) -> str | None:
    """The reason given for an edit: the first counted vote of those edited args that gave one (the editor's, as a rule)."""
    if edited_args is None:
        return None
    return next((v.review_reason for v in votes if v.counted and v.edited_args == edited_args and v.review_reason), None)


def _settled(
    record: ApprovalRecord,
    status: Status,
    who: Approver,
    vote: Vote,
    now: datetime,
    resolution: Resolution | None = None,
    votes: list[ApprovalVote] | None = None,
) -> ApprovalRecord:
    votes = _votes_after(record, who, vote, now, restart=False) if votes is None else votes
    # A grant's reason is its edit's (a concurrence without a reason keeps the editor's); a reject's is the rejecter's.
    reason = _edit_reason(votes, vote.edited_args) if status == "granted" else (vote.review_reason if status == "rejected" else None)
    return record.model_copy(
        update={
            "status": status,
            "decided_by": who.approver,
            "decided_at": now,
            "comment": vote.comment,
            "review_reason": reason,
            "votes": votes,
            "edited_args": vote.edited_args if status == "granted" else record.edited_args,
            "approvers": [who.approver] if status in ("rejected", "resolved") else record.approvers,
            "resolution": resolution,
            "version": record.version + 1,
        }
    )


def expire(record: ApprovalRecord, now: datetime) -> Transition | None:
    """An overdue pending request expires (fail closed); follow-ups just close without an event."""
    if not record.is_pending or now < record.expires_at:
        return None
    expired = record.model_copy(update={"status": "expired", "decided_at": now, "version": record.version + 1})
    return Transition(record=expired, event_type=EXPIRED if record.kind == "approval" else None)


def escalate(record: ApprovalRecord, now: datetime, after: timedelta | None) -> ApprovalRecord | None:
    """The request opened to its escalation groups, once it has waited `after`; None when not due."""
    if after is None or not record.is_pending or record.escalated_at is not None or now < record.created_at + after:
        return None
    return record.model_copy(update={"escalated_at": now, "version": record.version + 1})


def _approval_data(record: ApprovalRecord) -> ApprovalData:
    return ApprovalData(
        approval_id=record.approval_id,
        action_id=record.action_id,
        task_id=record.task_id,
        tenant_id=record.tenant_id,
        tool=record.tool,
        args=record.args,
        action_digest=record.action_digest,
        reasons=record.reasons,
        policy_version=record.policy_version,
        approver=record.decided_by,
        approvers=record.approvers,
        approver_groups=record.approver_groups if record.status == "granted" else {},
        comment=record.comment,
        review_reason=record.review_reason,
        edited_args=record.edited_args,
        expires_at=record.expires_at,
        decided_at=record.decided_at,
        requested_by=record.requested_by,
        task_requested_by=record.task_requested_by,
        resolution=record.resolution,
        votes=record.votes,
    )


def unsigned_request(record: ApprovalRecord) -> ApprovalData:
    """The data of `approval.requested` (not signed: it asks, it does not permit anything)."""
    return _approval_data(record).model_copy(
        update={"approver": None, "approvers": [], "comment": None, "review_reason": None, "decided_at": None, "votes": []}
    )


def signed_decision(record: ApprovalRecord, event_type: str, key: SigningKey) -> ApprovalData:
    """The data of a decision event, signed by the approval service over `approval_message`.

    `args` and `action_digest` are those of the original call the humans saw; `edited_args`, if any,
    are what the policy service re-evaluates.
    """
    data = _approval_data(record).model_copy(update={"key_id": key.key_id, "signature": None})
    return data.model_copy(update={"signature": key.sign(approval_message(event_type, data))})


def cost_so_far(events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The task's cost from the decisions and results this service has seen.

    `spent_usd` sums the results' actual cost, ONE result per action id (a result re-published
    under another event id is the same result); `reserved_usd` sums the estimates of calls policy
    allowed whose result has not been seen yet.
    """
    reserved = 0.0
    counts: dict[str, int] = {}
    results: dict[str, float] = {}
    rows = list(events)
    for row in rows:
        if row["type"].startswith("tidegate.action.") and row["type"] != "tidegate.action.decided":
            if row["action_id"] in results:
                continue
            results[row["action_id"]] = float(row.get("cost_usd") or 0.0)
        counts[row["type"]] = counts.get(row["type"], 0) + 1
    spent, finished = sum(results.values()), set(results)
    for row in rows:
        if row["type"] == "tidegate.action.decided" and row.get("outcome") == "allow" and row["action_id"] not in finished:
            reserved += float(row.get("cost_usd") or 0.0)
    return {"spent_usd": round(spent, 6), "reserved_usd": round(reserved, 6), "events": counts}
