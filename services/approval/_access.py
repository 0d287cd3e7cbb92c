"""Who may decide a request at all: tenant, known requester, group, four eyes (`requesters`), counted groups."""

from __future__ import annotations

from collections.abc import Collection

from schemas import ApprovalCredential
from servicekit.approver_groups import counts
from servicekit.people import same_person
from services.approval._approval_record import ApprovalRecord, Frozen, Via
from services.approval._groups import GroupsConfig
from services.approval._refusals import Refusal, not_found, refuse

__all__ = ["Approver", "check_access", "requesters"]


class Approver(Frozen):
    """An authenticated human, with the tenant and groups their credential gives them."""

    approver: str
    tenant_id: str
    groups: frozenset[str] = frozenset()
    via: Via = "token"
    operator: bool = False
    credential: ApprovalCredential | None = None
    """Which credential proved them (an id, never the secret): signed into their vote (`ApprovalVote.credential`)."""

    def may_see(self, tenant_id: str) -> bool:
        """Approvers see their own tenant's queue only; an operator token (made by the operator CLI) sees every tenant's."""
        return self.operator or self.tenant_id == tenant_id


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
        return refuse(
            "requester_unknown",
            409,
            "the requester of this task is unknown, so four eyes cannot be checked and nobody may approve it; "
            "it stays pending until an operator rejects it or it expires (docs/approval.md)",
        )
    allowed = groups.allowed_groups(record.tenant_id, record.risk, escalated=record.escalated_at is not None)
    if not allowed & who.groups:
        # Group names as words, and who to turn to: "need a member of ['support']; … is in ['finance']" was a Python list
        # to the approver woken at 2 a.m., who could act on none of it (the approver2am probe).
        deciders = " or ".join(sorted(allowed))
        whose = deciders or "no group (the groups file names none)"
        return refuse(
            "not_in_group",
            403,
            f"{record.risk} actions of {record.tenant_id} are decided by a member of {whose}; "
            f"{who.approver} is in {' and '.join(sorted(who.groups)) or 'no group'}"
            + (f", so neither approve nor reject is yours: leave it to {deciders}" if deciders else ""),
        )
    if any(same_person(who.approver, r) for r in requesters(record)):
        return refuse("four_eyes", 403, f"{who.approver} requested this task and may not approve its actions (four eyes)")
    if record.kind == "approval" and not rejecting and not counts(counted, who.groups):
        return refuse(
            "groups_not_counted",
            403,
            f"your approval would not count: the tenant's settings require a member of {sorted(counted)} for {record.risk} calls "
            f"(approver_groups); {who.approver} is in {sorted(who.groups) or 'none'}",
        )
    return None
