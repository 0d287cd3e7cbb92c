"""A human's vote on a request and the quorum: who approved, edits and their replacement, at most one approval without a token."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any, Literal

from schemas import APPROVE_REASONS, ApprovalVote
from servicekit import action_digest
from servicekit.people import same_person
from services.approval._access import Approver, check_access
from services.approval._approval_record import EDITED, GRANTED, REJECTED, RESOLVED, ApprovalRecord, Frozen, Resolution, Status, Transition
from services.approval._groups import GroupsConfig
from services.approval._refusals import Refusal, already_settled, digest_changed, expired_undecided, refuse

__all__ = ["Vote", "approvals_of", "decide", "edit_pending", "has_approved", "pending_editor", "second_vote_without_token"]


class Vote(Frozen):
    """What a human asks for: approve (possibly with edited args) or reject, having seen a given call."""

    decision: Literal["approve", "reject"]
    comment: str | None = None
    review_reason: str | None = None
    seen_digest: str | None = None
    edited_args: dict[str, Any] | None = None
    replace_edit: bool = False  # approve another call than another approver's pending edit, knowingly (with a comment: `edit_pending`)


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
    return refuse(
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
        return refuse(
            "edit_pending",
            409,
            f"{head}: a chat callback cannot replace an edit; concur by sending these edited_args, or open the request's page "
            "(page_url) signed in with your API token to see the edit and concur or replace it",
        )
    if who.via == "link":
        return refuse(
            "edit_pending",
            409,
            f"{head}: a one-time link cannot replace an edit; approve the edited args the page shows to concur, or sign in with your "
            "API token to replace the edit",
        )
    if not vote.replace_edit:
        return refuse(
            "edit_pending",
            409,
            f'{head}: to concur, approve with the same edited_args; to replace the edit, approve again with "replace_edit": true and a '
            f"comment saying why (CLI: --replace-edit -m …); {editor} is told",
        )
    if not (vote.comment or "").strip():
        return refuse("comment_required", 422, f"replacing {editor}'s edit needs a comment saying why: {editor} is told")
    return None


def approvals_of(record: ApprovalRecord) -> list[str]:
    """Who approved: a rejected request's approvals given before it was rejected (never its rejecter); otherwise `approvers`."""
    if record.status != "rejected":
        return list(record.approvers)
    return [v.approver for v in record.votes if v.decision == "approve" and v.counted]


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
        return refuse("not_pending", 409, already_settled(record))
    if now >= record.expires_at:
        return expired_undecided(record)
    if vote.seen_digest is not None and vote.seen_digest != record.action_digest:
        return digest_changed(record, vote.seen_digest)
    if action_digest(record.tenant_id, record.tool, record.args) != record.action_digest:
        return refuse("digest_mismatch", 409, "the stored call no longer matches its digest; refusing to grant it")
    if record.kind == "follow_up":
        if vote.edited_args is not None:
            return refuse("edit_not_allowed", 422, "a follow-up records what happened; it has no args to edit")
        resolution: Resolution = "confirmed_done" if vote.decision == "approve" else "confirmed_not_done"
        return Transition(record=_settled(record, "resolved", who, vote, now, resolution=resolution), event_type=RESOLVED)
    if vote.decision == "reject":
        return Transition(record=_settled(record, "rejected", who, vote, now), event_type=REJECTED)
    if vote.edited_args is not None and vote.edited_args == record.args:
        vote = vote.model_copy(update={"edited_args": None})  # "edited" to the call itself: a plain approve, which keeps the votes
    if has_approved(record, who.approver) and vote.edited_args == record.edited_args:
        return refuse(
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
    # An edit's or a reject's reason is kept, and a plain approve's when it says the escalation was needless (the service
    # refuses any other on a plain approve: `reason_not_for_approve`).
    keeps = vote.decision == "reject" or vote.edited_args is not None or vote.review_reason in APPROVE_REASONS
    reason = vote.review_reason if keeps else None
    cast = ApprovalVote(
        approver=who.approver,
        decision=vote.decision,
        via=who.via,
        at=now,
        comment=vote.comment,
        review_reason=reason,
        edited_args=vote.edited_args if vote.decision == "approve" else None,
        credential=who.credential,
    )
    return [*kept, cast]


def _grant_reason(votes: Iterable[ApprovalVote], edited_args: dict[str, Any] | None) -> str | None:
    """The reason of a grant: the first counted approval of the call it runs that gave one (an edit's editor, as a rule)."""
    given = (v.review_reason for v in votes if v.counted and v.decision == "approve" and v.edited_args == edited_args)
    return next((reason for reason in given if reason), None)


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
    # A grant's reason is its edit's (a concurrence without a reason keeps the editor's), or for the call unchanged the
    # first approver's who said it needed no human; a reject's is the rejecter's.
    reason = _grant_reason(votes, vote.edited_args) if status == "granted" else (vote.review_reason if status == "rejected" else None)
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
