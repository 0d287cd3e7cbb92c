"""Votes on a request: who is admitted before the body is read, the checks of a vote's body, the vote taken and announced.

Part of `ApprovalService` (`services.approval.service` composes it). This part owns one retry: a vote that loses a
concurrent write is re-read and re-decided (a few times), so a second approver of an N-of-M request is counted
rather than refused; the bus owns handler retries.
"""

from __future__ import annotations

from typing import Literal

from schemas import APPROVE_REASONS
from servicekit import Attr, span
from servicekit.metrics import observe_human_decision
from services.approval import domain
from services.approval._announcing import Announcing, kept_settled
from services.approval._ballots import proven_approvals, with_ballot
from services.approval._decision_proofs import unproven_refusal
from services.approval._people import People, Session
from services.approval._reads import Reads
from services.approval._refusals import digest_changed, not_read
from services.approval._service_base import log
from services.approval.domain import ApprovalRecord, Refusal, Vote

__all__ = ["LINK_USED", "Voting"]

LINK_USED = (
    "this one-time link was already used; to see or decide this request again, open the approval page with your API token "
    "(tidegate approvals token create), or ask for a new link"
)


class Voting(People, Reads, Announcing):
    """A vote admitted, judged (`_vote_refusal`), decided by the domain, saved with its announcement; what holds an approve."""

    async def admission(self, approval_id: str, session: Session, decision: Literal["approve", "reject"]) -> Refusal | None:
        """Whether the caller may decide this request at all, judged before its body is read (None: go on).

        The order is the one docs/security/approval.md documents: a link for another approval, then
        the request (missing or another tenant's: the same 404), then requester, group and four eyes.
        """
        if session.link is not None and session.link.approval_id != approval_id:
            return Refusal(code="wrong_link", status=403, message="this link is for another approval")
        record = await self.repo.lookup(approval_id)
        if not isinstance(record, ApprovalRecord):  # missing, or its row refused (said to whoever may see its tenant)
            return not_read(record, approval_id, session.approver.may_see)
        return self.access(record, session.approver, rejecting=decision == "reject")

    async def vote(self, approval_id: str, session: Session, vote: Vote) -> ApprovalRecord | Refusal:
        """Take one human's vote; the record after it, or why it is refused.

        The vote is traced as a child of the escalation's trace, so the decision event (and the policy's
        re-decision, and the executor's call) continue the task's one trace.
        """
        known = await self.repo.get(approval_id)
        parent = known.traceparent if known else None
        attributes = {Attr.SERVICE: "approval", Attr.APPROVAL: approval_id, Attr.TASK: known.task_id if known else None}
        with span(f"approval {vote.decision}", parent=parent, attributes=attributes) as s:
            result = await self._vote(approval_id, session, vote)
            s.set_attribute(Attr.OUTCOME, result.code if isinstance(result, Refusal) else result.status)
            return result

    async def _vote(self, approval_id: str, session: Session, vote: Vote) -> ApprovalRecord | Refusal:
        if session.link is not None:
            if session.link.approval_id != approval_id:
                return Refusal(code="wrong_link", status=403, message="this link is for another approval")
            # What the credential does not change is judged before the link is spent, so a mistake in the body (or a
            # call that changed since it was read) leaves the link usable for the corrected vote.
            judged = await self._judged(approval_id, session, vote)
            if isinstance(judged, Refusal):
                return judged
            spent = await self.repo.spend_link(session.link.link_id, approval_id, session.approver.approver)
            if not spent:
                return Refusal(code="link_used", status=401, message=LINK_USED)
        for _ in range(5):
            record = await self._judged(approval_id, session, vote)
            if isinstance(record, Refusal):
                return record
            outcome = domain.decide(record, session.approver, vote, now=self.clock(), groups=self.groups, counted=self.counted(record))
            if isinstance(outcome, Refusal):
                return outcome
            if vote.decision == "approve":  # signed as it is counted: a name the database adds later is not (`_ballots`)
                proven = with_ballot(self.seals.ballots if self.seals else None, record, outcome.record, session.approver.approver)
                outcome = outcome.model_copy(update={"record": proven})
            outbox, deliveries = await self._announce(outcome.record, outcome.event_type) if outcome.event_type else ([], [])
            outcome = outcome.model_copy(update={"record": kept_settled(outcome.record, outbox)})
            if await self.repo.save(record.version, outcome.record, outbox, deliveries):
                await self._publish(outbox)
                if outcome.record.status in ("granted", "rejected"):
                    seconds = (self.clock() - record.created_at).total_seconds()
                    observe_human_decision(record.tenant_id, record.risk, outcome.record.status, seconds)
                log.info("approval %s: %s by %s -> %s", approval_id, vote.decision, session.approver.approver, outcome.record.status)
                return outcome.record
        return Refusal(code="conflict", status=409, message="the approval kept changing while you decided; reload and try again")

    async def _judged(self, approval_id: str, session: Session, vote: Vote) -> ApprovalRecord | Refusal:
        """The request as stored now, or why the vote is refused before the domain decides it (`_vote_refusal`)."""
        record = await self.repo.get(approval_id)
        if record is None:
            return domain.not_found(approval_id)
        record = proven_approvals(self.seals.ballots if self.seals else None, record)  # an approval the service did not sign counts not
        return self._vote_refusal(record, session, vote) or record

    def _vote_refusal(self, record: ApprovalRecord, session: Session, vote: Vote) -> Refusal | None:
        """Why a vote is refused before the domain decides it: who may act, then the body (its reason, its edited args, the digest)."""
        refused = self.access(record, session.approver, rejecting=vote.decision == "reject")
        if refused is not None:  # who may act comes before anything about the call (its args included) is judged
            return refused
        unknown_reason = self._unknown_review_reason(record.tenant_id, vote.review_reason) or _reason_not_for_approve(record, vote)
        if unknown_reason is not None:
            return unknown_reason
        if vote.edited_args is not None and self.catalog is not None and record.tool in self.catalog:
            errors = self.catalog.arg_errors(record.tool, vote.edited_args)
            if errors:
                return Refusal(code="invalid_args", status=422, message="edited args break the tool's schema: " + "; ".join(errors))
        live = record.is_pending and self.clock() < record.expires_at  # else the domain says it is settled or expired
        if live and vote.seen_digest is not None and vote.seen_digest != record.action_digest:
            return digest_changed(record, vote.seen_digest)
        if not live:
            return None
        if vote.decision != "approve":  # a request's reject fails closed unless its signed decision settled it; a follow-up's moves money
            return unproven_refusal(self.shown(record), rejecting=True)
        return (  # refused before a link is spent, as the domain would refuse it
            domain.edit_pending(record, session.approver, vote)
            or domain.second_vote_without_token(record, session.approver, vote)
            or self.approval_held(record)
            or unproven_refusal(self.shown(record))  # not shown as the policy signed it
        )

    def approval_held(self, record: ApprovalRecord) -> Refusal | None:
        """Why an approve of `record` is held now: a grant would end in the policy's deny.

        A kill switch on its tool (a final deny), or a catalog that no longer grants the tool to the request's tenant
        (`tool_not_granted`: a request raised before its entry named its tenants).
        """
        spec = self.catalog.get(record.tool) if self.catalog is not None and record.kind == "approval" else None
        if spec is not None and not spec.granted_to(record.tenant_id):
            return Refusal(
                code="tool_not_granted",
                status=409,
                message=f"the catalog does not grant {record.tool} to tenant {record.tenant_id} (its entry's `tenants`): a grant would "
                "be denied tool_not_granted and nothing would run; reject it, or have an operator grant the tool first (docs/tools.md)",
            )
        switch = self.killswitch(record.tenant_id, record.tool) if record.kind == "approval" else None
        if switch is None:
            return None
        return Refusal(
            code="killswitch",
            status=409,
            message=f"a kill switch is set on {record.tool} ({switch['reason']}): a grant now ends in a deny that stays final, even "
            "once the switch is lifted; the request stays pending: approve it once the switch is lifted, or reject it",
        )

    def _unknown_review_reason(self, tenant_id: str, reason: str | None) -> Refusal | None:
        taxonomy = self.review_reasons(tenant_id)
        if reason is None or reason in taxonomy:
            return None
        return Refusal(code="unknown_review_reason", status=422, message=f"review_reason {reason!r} is not one of: {', '.join(taxonomy)}")


def _reason_not_for_approve(record: ApprovalRecord, vote: Vote) -> Refusal | None:
    """Why a reason is refused on an unchanged approval: it says the call is wrong, which approving it unchanged contradicts.

    Only `APPROVE_REASONS` (the escalation was needless) go with a plain approve; the others go with an edit or a reject.
    """
    plain = vote.decision == "approve" and (vote.edited_args is None or vote.edited_args == record.args)
    if not plain or vote.review_reason is None or vote.review_reason in APPROVE_REASONS:
        return None
    return Refusal(
        code="reason_not_for_approve",
        status=422,
        message=f"review_reason {vote.review_reason!r} says the call is wrong: give it with edited args or a reject; approving the "
        f"call unchanged takes only {', '.join(APPROVE_REASONS)} (a human should not have been asked)",
    )
