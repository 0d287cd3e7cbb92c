"""The approval service's decisions, as pure functions: who may decide what, and what follows.

Nothing here does I/O. A request is an `ApprovalRecord`; a human's vote on it either is refused
(`Refusal`, with the HTTP status an API answers with) or yields a `Transition`: the new record and,
when the request is settled, the decision event type to publish.

This module is the domain's one door; each job sits in its own room: the record and its states
(`_approval_record`), approver groups (`_groups`), the requests opened from a decision or a result
(`_requests`), refusals (`_refusals`), who may decide at all and four eyes (`_access`), votes and the
quorum (`_votes`), the data of approval events (`_event_data`), a task's cost so far (`_task_cost`).
"""

from __future__ import annotations

from services.approval._access import Approver, check_access, requesters
from services.approval._approval_record import (
    EDITED,
    EXPIRED,
    GRANTED,
    REJECTED,
    REQUESTED,
    RESOLVED,
    UNKNOWN_RISK,
    ApprovalRecord,
    Ballot,
    Kind,
    Resolution,
    Status,
    Transition,
    Via,
    escalate,
    expire,
)
from services.approval._event_data import signed_decision, unsigned_request
from services.approval._groups import DEFAULT_GROUPS, GroupsConfig, TenantGroups
from services.approval._refusals import Refusal, already_settled, not_found
from services.approval._requests import follow_up_from_result, opens_request, refresh_request, request_from_decision
from services.approval._task_cost import cost_so_far
from services.approval._votes import (
    Vote,
    approvals_of,
    decide,
    edit_pending,
    has_approved,
    pending_editor,
    second_vote_without_token,
)

__all__ = [
    "DEFAULT_GROUPS",
    "EDITED",
    "EXPIRED",
    "GRANTED",
    "REJECTED",
    "REQUESTED",
    "RESOLVED",
    "UNKNOWN_RISK",
    "ApprovalRecord",
    "Approver",
    "Ballot",
    "GroupsConfig",
    "Kind",
    "Refusal",
    "Resolution",
    "Status",
    "TenantGroups",
    "Transition",
    "Via",
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
