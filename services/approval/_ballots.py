"""Proof on the approvals a request has counted so far: the service signs each as it records it, and checks them all before counting.

A request needing several approvals keeps the ones given so far in its row (`approvers`, with the groups each
held and how each came). The service's database login could add a name there, and the next genuine approval
would then complete the quorum, with that name's groups signed into the grant. So each counted approval
carries the service's signature over what it approved (request, call, edited args) and who gave it with which
groups, and over their vote as the grant signs it: comment, reason, time, how it came, the credential that proved them
(`ApprovalRecord.ballots`); before a vote is counted, an approval whose signature fails
is dropped from the request (a log line, the metric), never counted nor signed into a grant.
"""

from __future__ import annotations

from typing import Any

from schemas import ApprovalVote
from services.approval._row_proofs import RowSeal
from services.approval.domain import ApprovalRecord, Ballot

__all__ = ["ballot_claims", "proven_approvals", "sort_approvals", "with_ballot"]


def ballot_claims(record: ApprovalRecord, approver: str) -> dict[str, Any]:
    """What the signature of `approver`'s counted approval of `record` covers."""
    claims: dict[str, Any] = {
        "approval_id": record.approval_id,
        "action_id": record.action_id,
        "tenant_id": record.tenant_id,
        "tool": record.tool,
        "action_digest": record.action_digest,
        "edited_args": record.edited_args,
        "approver": approver,
        "groups": sorted(record.approver_groups.get(approver, [])),
        "via": record.approved_via.get(approver, "token"),
    }
    # Their counted vote as the grant will sign it: what they said (comment, reason, edited args), when, how it came, and the
    # credential that proved them. The database login could otherwise rewrite any of it before the grant signs the votes
    # (bindattack F1: a comment, a `should_not_need_approval` the autonomy report counts, another token's id). Only
    # `counted` and `replaced_by` are left out: the service changes them on a later vote, and `approvers` proves who counts.
    # The credential stays its own claim, left out when none, as ballots signed before the rest of the vote was named it.
    vote = _counted_vote(record, approver)
    if vote is not None and vote.credential is not None:
        claims["credential"] = vote.credential.model_dump(mode="json")
    if vote is not None:
        claims["vote"] = vote.model_dump(mode="json", exclude={"counted", "replaced_by", "credential"})
    return claims


def proven_approvals(seal: RowSeal | None, record: ApprovalRecord) -> ApprovalRecord:
    """`record` with only the approvals whose signature verifies (`seal` None: a twin without one trusts its memory)."""
    return sort_approvals(seal, record)[0]


def sort_approvals(seal: RowSeal | None, record: ApprovalRecord) -> tuple[ApprovalRecord, dict[str, str]]:
    """`record` with only the approvals whose signature verifies, and each other approver with why theirs does not.

    Each one dropped is told to the operator once (a log line) and counted at every read (the metric).
    """
    if seal is None or not record.is_pending:
        return record, {}
    kept: list[str] = []
    dropped: dict[str, str] = {}
    for approver in record.approvers:
        ballot = record.ballots.get(approver)
        why = seal.why_not(ballot_claims(record, approver), ballot.key_id if ballot else None, ballot.signature if ballot else None)
        if why is None:
            kept.append(approver)
        else:
            dropped[approver] = why
            fix = "the approval is not counted; the approver may approve again"
            seal.refused(f"approval of {record.approval_id} by {approver}", why, fix, row=(record.approval_id, approver, why))
    votes = _votes_of(record, kept)
    if not dropped and votes == record.votes:
        return record, {}
    counted = record.model_copy(
        update={
            "approvers": kept,
            "approver_groups": {a: g for a, g in record.approver_groups.items() if a in kept},
            "approved_via": {a: v for a, v in record.approved_via.items() if a in kept},
            "ballots": {a: b for a, b in record.ballots.items() if a in kept},
            "votes": votes,
        }
    )
    return counted, dropped


def _votes_of(record: ApprovalRecord, kept: list[str]) -> list[ApprovalVote]:
    """`record`'s votes with only those its counted approvals' ballots cover still counted (attacker3 F2).

    A pending request's counted votes are its approvers' approvals, each the last counted one of its approver (what
    `ballot_claims` signs). The login could mark any other vote counted (someone who never voted, or a second vote of an
    approver before theirs): the grant signs the votes, takes its reason from the first counted one, and the autonomy
    report counts a counted vote's `should_not_need_approval`. Such a vote is kept, not counted.
    """
    covered = {id(v) for a in kept if (v := _counted_vote(record, a)) is not None}
    return [v if not v.counted or id(v) in covered else v.model_copy(update={"counted": False}) for v in record.votes]


def _counted_vote(record: ApprovalRecord, approver: str) -> ApprovalVote | None:
    """The vote `approver`'s ballot covers: their last counted approve (None: a ballot signed before votes were named)."""
    return next((v for v in reversed(record.votes) if v.counted and v.decision == "approve" and v.approver == approver), None)


def with_ballot(seal: RowSeal | None, before: ApprovalRecord, after: ApprovalRecord, approver: str) -> ApprovalRecord:
    """`after` (a vote of `approver` applied to `before`) with the proof of each approval it counts: kept, and `approver`'s signed now."""
    if seal is None or approver not in after.approvers:
        return after
    kept = {a: b for a, b in before.ballots.items() if a in after.approvers and a != approver}
    proof = seal.sign(ballot_claims(after, approver))
    return after.model_copy(update={"ballots": kept | {approver: Ballot(key_id=proof.key_id, signature=proof.signature)}})
