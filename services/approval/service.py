"""The approval service's use cases: open requests, take votes, expire, notify. I/O only through adapters.

Handlers and the HTTP API call these; the decisions themselves are `domain` functions. This layer
owns one retry: a vote that loses a concurrent write is re-read and re-decided (a few times), so a
second approver of an N-of-M request is counted rather than refused; the bus owns handler retries.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas import (
    REVIEW_REASONS,
    ActionDecided,
    ActionDecidedData,
    ActionProposed,
    ActionProposedData,
    ActionResult,
    ActionResultData,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    ApprovalResolved,
    Envelope,
    ReasonCode,
    ToolSpec,
)
from servicekit import (
    Attr,
    Authority,
    ControlState,
    Recorded,
    Reject,
    SigningKey,
    ToolCatalog,
    current_traceparent,
    encode_signed,
    once_delivered,
    span,
)
from servicekit.costs import ReviewPrice
from servicekit.metrics import observe_human_decision, observe_queue
from servicekit.outlet import record_event
from servicekit.undo import undo_proposal, undo_refusal
from services.approval import auth, domain, webhooks
from services.approval._ballots import proven_approvals, with_ballot
from services.approval._groups_counted import counted_groups, disagreement
from services.approval._record_reads import kept_result
from services.approval._row_proofs import Seals
from services.approval._undo_states import undo_case
from services.approval._undo_store import InMemoryUndoResults, KeptResult, UndoResults
from services.approval._webhook_side import WebhookSide
from services.approval.domain import ApprovalRecord, Approver, GroupsConfig, Refusal, Vote
from services.approval.quality import QueueAge, queue_age, review_of
from services.approval.repository import ApprovalRepository, Delivery, OutboxItem, TaskEvent, TokenInfo
from services.approval.reviews import review_report
from services.approval.settings import ApprovalSettings

__all__ = ["LINK_USED", "ApprovalService", "AuthError", "CallbackDecision", "Publisher", "Session"]

log = logging.getLogger(__name__)

QUEUE_LIMIT = 5000  # pending requests read to measure a queue's age
QUEUE_METRICS_EVERY_S = 15.0
REPORT_LIMIT = 20000  # requests read for the approver page's report
LINK_USED = (
    "this one-time link was already used; to see or decide this request again, open the approval page with your API token "
    "(tidegate approvals token create), or ask for a new link"
)
DIGEST_CHANGED = "the call changed since you saw it; reload and decide on the current call"

SOURCE = "tidegate/approval"
_ENVELOPES: dict[str, type[Envelope]] = {
    domain.REQUESTED: ApprovalRequested,
    domain.GRANTED: ApprovalGranted,
    domain.REJECTED: ApprovalRejected,
    domain.EXPIRED: ApprovalExpired,
    domain.RESOLVED: ApprovalResolved,
}


class Publisher(Protocol):
    """Publishes on catalog topics (the Bus; `servicekit.EventOutlet` in tests)."""

    async def publish(self, topic: str, event: Envelope) -> None:
        """Publish an event (signed by the publisher)."""
        ...

    async def publish_many(self, records: Sequence[Recorded]) -> None:
        """Publish recorded events as they are (an outbox's stored bytes)."""
        ...


class AuthError(Exception):
    """A credential that does not authenticate anyone (HTTP 401)."""


@dataclass(frozen=True)
class Session:
    """An authenticated caller: the approver and, for a one-time link, its claims (for a token, its id)."""

    approver: Approver
    link: auth.LinkClaims | None = None
    token_id: str | None = None
    token_lifetime: timedelta | None = None
    """For a token: how long it was made to live (`expires_at - created_at`); a rotation gives its successor no longer."""


class CallbackDecision(BaseModel):
    """The `data` of an inbound callback: a decision an approver took in their chat tool."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    approval_id: str
    approver: str = Field(min_length=1)
    decision: str = Field(pattern="^(approve|reject)$")
    action_digest: str
    comment: str | None = Field(default=None, max_length=4000)
    review_reason: str | None = Field(default=None, max_length=63)  # a code of the tenant's taxonomy, checked as over the API
    edited_args: dict[str, Any] | None = None


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _decided_task_event(decided: ActionDecidedData, event_id: str, at: datetime) -> TaskEvent:
    return TaskEvent(
        event_id=event_id,
        tenant_id=decided.tenant_id,
        task_id=decided.task_id,
        action_id=decided.action_id,
        type="tidegate.action.decided",
        tool=decided.tool,
        at=at,
        outcome=decided.outcome,
        cost_usd=decided.estimated_cost_usd,
        requested_by=decided.requested_by,
        risk=str(decided.risk) if decided.risk else None,
        args=decided.args,
        summary=f"{decided.outcome} via {decided.via}: " + ", ".join(r.code for r in decided.reasons),
    )


def _result_task_event(result: ActionResultData, event_type: str, event_id: str, at: datetime, spec: ToolSpec | None) -> TaskEvent:
    error = f": {result.error.type}: {result.error.message}" if result.error else ""  # as the audit writes it (`_undo_states` reads it)
    return TaskEvent(
        event_id=event_id,
        tenant_id=result.tenant_id,
        task_id=result.task_id,
        action_id=result.action_id,
        type=event_type,
        tool=result.tool,
        at=at,
        outcome=result.status,
        cost_usd=result.cost.usd,
        summary=f"{result.status} after {result.attempts} attempt(s){error}",
        # what the call returned is the executor's to keep, but a trusted read's, small: the approver of a later call on that
        # entry reads it there (the order's payee and amount beside a refund: `_record_reads`)
        result=kept_result(result, spec),
    )


def _undoable(result: ActionResultData) -> bool:
    """A succeeded call with the executor's undo plan: an approver may propose its undo."""
    return result.status == "succeeded" and result.undo is not None


def _handling(event: ActionDecided | ActionResult) -> AbstractContextManager[Any]:
    """The span the bus opens around a handler (`Bus.handle_event`), for an event of a batch that needs more than its row."""
    attributes = {
        Attr.SERVICE: "approval",
        Attr.EVENT_ID: event.id,
        Attr.EVENT_TYPE: event.type,
        Attr.TENANT: event.tenantid,
        Attr.TASK: event.subject,
    }
    return span(f"approval handle {event.type.removeprefix('tidegate.')}", parent=event.traceparent, attributes=attributes)


@dataclass
class ApprovalService(WebhookSide):
    """Everything the approval service does, given its adapters."""

    repo: ApprovalRepository
    publisher: Publisher
    key: SigningKey
    groups: GroupsConfig
    settings: ApprovalSettings
    catalog: ToolCatalog | None = None
    control: ControlState | None = None
    sender: webhooks.WebhookSender | None = None
    undo_results: UndoResults = field(default_factory=InMemoryUndoResults)
    clock: Callable[[], datetime] = _utcnow
    base_url: Callable[[], str] = lambda: "http://127.0.0.1:8081"
    seals: Seals | None = None  # signs and checks the approvals a request counts (`_ballots`); None: a twin trusting its memory
    review_price: ReviewPrice = field(default_factory=ReviewPrice)  # what the summary prices a decision at (`TIDEGATE_HUMAN_*`)
    authority: Authority | None = None  # verifies the executor's kept result events an undo's plan comes from; None: none is trusted
    published: int = field(default=0, init=False)
    _queue_observed_at: datetime | None = field(default=None, init=False)
    _disagreements_told: set[str] = field(default_factory=set, init=False)
    _turns: dict[tuple[str, str], asyncio.Task[int]] = field(default_factory=dict, init=False)  # endpoints whose attempts go on
    _webhook_gate: asyncio.Semaphore | None = field(default=None, init=False)  # `webhook_concurrency` over every round's turns

    # --- requests ------------------------------------------------------------------------------

    async def on_decided(self, decided: ActionDecidedData, *, event_id: str, at: datetime) -> ApprovalRecord | None:
        """Remember a decision for context; open (or refresh) a request for an escalation by policy."""
        await self.repo.record_task_events([_decided_task_event(decided, event_id, at)])
        return await self._request_for(decided)

    async def on_decided_batch(self, events: Sequence[ActionDecided]) -> None:
        """A polled batch of decisions: kept in one write, then a request for each escalation by policy, under its own span.

        Most decisions need no human: for them this is the whole work (the approver page's context
        and a follow-up's requester read them). A `Reject` of one request raises out of the batch,
        which the bus then handles one event at a time (`on_decided`): the writes are idempotent.
        """
        await self.repo.record_task_events([_decided_task_event(e.data, e.id, e.time) for e in events])
        for event in events:
            if domain.opens_request(event.data):
                with _handling(event):
                    await self._request_for(event.data)

    async def _request_for(self, decided: ActionDecidedData) -> ApprovalRecord | None:
        now = self.clock()
        fresh = domain.request_from_decision(
            decided,
            approval_id=f"ap-{uuid.uuid4().hex[:16]}",
            now=now,
            ttl=timedelta(seconds=self.settings.expiry_s),
            groups=self.groups,
            risk=self.risk_of(decided.tool),
        )
        if fresh is None:
            return None
        self.counted(fresh)  # tells a disagreement of the groups file with the tenant's settings as the request opens
        fresh = fresh.model_copy(update={"traceparent": current_traceparent()})
        existing = await self.repo.get_by_action(decided.action_id, tenant_id=decided.tenant_id)
        if existing is not None:
            refreshed = domain.refresh_request(existing, fresh)
            if refreshed is None:
                return existing  # a redelivery: the request exists and its event is in the outbox
            outbox, deliveries = await self._announce(refreshed, domain.REQUESTED)
            if await self.repo.save(existing.version, refreshed, outbox, deliveries):
                await self._publish(outbox)
            return refreshed
        outbox, deliveries = await self._announce(fresh, domain.REQUESTED)
        if await self.repo.insert_request(fresh, outbox, deliveries) is None:
            if (ours := await self.repo.get_by_action(decided.action_id, tenant_id=decided.tenant_id)) is None:
                # Action ids are global: a request of another tenant holds this one, and is never theirs.
                raise Reject(ReasonCode.ACTION_ID_REUSED, f"action id {decided.action_id} already has a request of another tenant")
            return ours
        await self._publish(outbox)
        log.info("approval %s requested for %s/%s (%s)", fresh.approval_id, fresh.tenant_id, fresh.action_id, fresh.tool)
        return fresh

    async def on_result(
        self, result: ActionResultData, *, event_type: str, event_id: str, at: datetime, signed: bytes | None = None
    ) -> ApprovalRecord | None:
        """Remember a result for cost; an unknown outcome opens a follow-up for a human (never a retry).

        `signed`: the executor's event as received (`servicekit.received`), kept for an undo's plan (None: its undo is refused).
        """
        await self._keep_undoable([(result, signed)])  # first: whoever sees the result among the task events finds it kept (_undo_states)
        await self.repo.record_task_events([_result_task_event(result, event_type, event_id, at, self._spec(result.tool))])
        return await self._follow_up(result) if result.status == "unknown" else None

    async def on_result_batch(self, events: Sequence[ActionResult], signed: Sequence[bytes | None] | None = None) -> None:
        """A polled batch of results: kept in one write (and the undoable ones in one more), then a follow-up for each unknown outcome.

        `signed`: each event as received, as in `on_result` (None: none). As `on_decided_batch`: what raises sends the
        batch back to the bus, to be handled one event at a time.
        """
        received = signed or [None] * len(events)
        await self._keep_undoable(list(zip([e.data for e in events], received, strict=True)))  # first, as in `on_result`
        await self.repo.record_task_events([_result_task_event(e.data, e.type, e.id, e.time, self._spec(e.data.tool)) for e in events])
        for event in events:
            if event.data.status == "unknown":
                with _handling(event):
                    await self._follow_up(event.data)

    async def _keep_undoable(self, results: Sequence[tuple[ActionResultData, bytes | None]]) -> None:
        """Keep the results an approver may undo, each with its signed event as received.

        One whose undo id another kept action holds is kept without it, and said.
        """
        undoable = [KeptResult(r, None if e is None else e.decode("utf-8", "replace")) for r, e in results if _undoable(r)]
        for action_id in await self.undo_results.keep(undoable):
            log.warning("approval: the undo id of %s is held by another kept action: kept without it (not known by its undo id)", action_id)

    async def _follow_up(self, result: ActionResultData) -> ApprovalRecord | None:
        decided = await self.repo.action_event(result.action_id, "tidegate.action.decided")
        request = await self.repo.get_by_action(result.action_id, tenant_id=result.tenant_id)
        args = (request.edited_args or request.args) if request else (decided.args if decided and decided.args is not None else {})
        record = domain.follow_up_from_result(
            result,
            approval_id=f"fu-{uuid.uuid4().hex[:16]}",
            now=self.clock(),
            ttl=timedelta(seconds=self.settings.follow_up_expiry_s),
            risk=self.risk_of(result.tool),
            requested_by=(decided.requested_by if decided else None) or (request.requested_by if request else None),
            args=args,
            requested_call=request,
        ).model_copy(update={"traceparent": current_traceparent()})
        _, deliveries = await self._announce(record, "tidegate.approval.follow_up")
        created = await self.repo.insert_request(record, [], deliveries)
        return created or await self.repo.get_by_action(result.action_id, "follow_up", tenant_id=result.tenant_id)

    def _spec(self, tool: str) -> ToolSpec | None:
        """The tool's entry in this service's own catalog (None: not there, or no catalog)."""
        return self.catalog.get(tool) if self.catalog is not None else None

    def risk_of(self, tool: str) -> str:
        """The tool's risk class in this service's own catalog (`unknown` when it is not there): never an event's claim."""
        if self.catalog is not None and tool in self.catalog:
            return str(self.catalog[tool].risk)
        return domain.UNKNOWN_RISK

    # --- votes ---------------------------------------------------------------------------------

    async def authenticate(self, credential: str | None) -> Session:
        """The caller behind an API token or a one-time link; raises AuthError."""
        if not credential:
            raise AuthError("no credential: send `Authorization: Bearer <token>` (or open your one-time link)")
        if credential.startswith(auth.LINK_PREFIX):
            try:
                claims = auth.verify_link(self.key, credential, now=self.clock())
            except auth.LinkError as exc:
                raise AuthError(str(exc)) from exc
            groups = await self.repo.groups_of(claims.approver, claims.tenant_id)
            if not groups:  # revoked or expired since the message went out: the link dies with the person's tokens
                raise AuthError("the link's approver holds no live token in its tenant any more")
            who = Approver(approver=claims.approver, tenant_id=claims.tenant_id, groups=frozenset(groups), via="link")
            return Session(who, claims)
        info = await self.repo.token(auth.hash_token(credential))
        if info is None:
            raise AuthError("unknown, revoked or expired token")
        who = Approver(approver=info.approver, tenant_id=info.tenant_id, groups=frozenset(info.groups), operator=info.operator)
        lifetime = info.expires_at - info.created_at if info.expires_at is not None else None
        return Session(who, token_id=info.token_id, token_lifetime=lifetime)

    async def rotate_token(self, session: Session, ttl_days: float | None = None) -> tuple[str, TokenInfo] | Refusal | None:
        """A new token for the caller's own token (same approver, tenant, groups); the old one is revoked at once.

        The new token lives at most as long as the one it replaces was made to live (by default the setting's
        lifetime, or that one's if shorter): a token, stolen or not, is never widened over HTTP; a longer one is
        the operator's (`tidegate approvals token create`). None: the caller is not a token.
        """
        if session.token_id is None:
            return None
        if session.approver.operator:  # the service signs a tenant's tokens only: an operator token is the operator key's
            return Refusal(
                code="operator_token",
                status=403,
                message="an operator token is rotated by the operator: `tidegate approvals token rotate <token id>`",
            )
        lifetime = timedelta(days=self.settings.token_ttl_days) if ttl_days is None else timedelta(days=ttl_days)
        if session.token_lifetime is not None:
            if ttl_days is not None and lifetime > session.token_lifetime + timedelta(seconds=1):
                most = session.token_lifetime / timedelta(days=1)
                return Refusal(
                    code="lifetime_too_long",
                    status=422,
                    message=f"a rotated token lives at most as long as the one it replaces ({most:g} days); an operator makes longer ones",
                )
            lifetime = min(lifetime, session.token_lifetime)
        token = auth.new_token()
        expires_at = self.clock() + lifetime
        info = await self.repo.rotate_token(session.token_id, auth.hash_token(token), expires_at)
        return (token, info) if info is not None else None

    def access(self, record: ApprovalRecord, who: Approver, *, rejecting: bool = False) -> Refusal | None:
        """`domain.check_access` with this service's groups file and the groups the tenant's settings count (`counted`)."""
        return domain.check_access(record, who, self.groups, rejecting=rejecting, counted=self.counted(record))

    def counted(self, record: ApprovalRecord) -> frozenset[str]:
        """The groups whose approvals of `record` the policy counts (empty: anyone's); a disagreement with the groups file is told once."""
        counted = counted_groups(self.control, record.tenant_id, record.risk)
        told = disagreement(self.groups, record.tenant_id, record.risk, counted)
        if told is not None and told not in self._disagreements_told:
            self._disagreements_told.add(told)
            log.warning("%s", told)
        return counted

    async def admission(self, approval_id: str, session: Session, decision: Literal["approve", "reject"]) -> Refusal | None:
        """Whether the caller may decide this request at all, judged before its body is read (None: go on).

        The order is the one docs/security/approval.md documents: a link for another approval, then
        the request (missing or another tenant's: the same 404), then requester, group and four eyes.
        """
        if session.link is not None and session.link.approval_id != approval_id:
            return Refusal(code="wrong_link", status=403, message="this link is for another approval")
        record = await self.repo.get(approval_id)
        if record is None:
            return domain.not_found(approval_id)
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
        unknown_reason = self._unknown_review_reason(record.tenant_id, vote.review_reason)
        if unknown_reason is not None:
            return unknown_reason
        if vote.edited_args is not None and self.catalog is not None and record.tool in self.catalog:
            errors = self.catalog.arg_errors(record.tool, vote.edited_args)
            if errors:
                return Refusal(code="invalid_args", status=422, message="edited args break the tool's schema: " + "; ".join(errors))
        live = record.is_pending and self.clock() < record.expires_at  # else the domain says it is settled or expired
        if live and vote.seen_digest is not None and vote.seen_digest != record.action_digest:
            return Refusal(code="digest_mismatch", status=409, message=DIGEST_CHANGED)
        if not live or vote.decision != "approve":
            return None
        return (  # refused before a link is spent, as the domain would refuse it
            domain.edit_pending(record, session.approver, vote)
            or domain.second_vote_without_token(record, session.approver, vote)
            or self.approval_held(record)
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

    async def link_spent(self, session: Session) -> bool:
        """Whether the session's one-time link is spent, read from the store: by this replica or any other on its database."""
        return session.link is not None and await self.repo.link_spent(session.link.link_id)

    async def queue(self, tenant_id: str | None, now: datetime | None = None) -> QueueAge:
        """The age of a tenant's queue of pending requests (every tenant's for None; one past its expiry no longer counts)."""
        now = now or self.clock()
        pending = await self.repo.search(tenant_id=tenant_id, status="pending", limit=QUEUE_LIMIT)
        return queue_age([r for r in pending if now < r.expires_at], now, self.settings.decision_slo_s)

    async def _observe_queue(self, now: datetime) -> None:
        """Refresh the pending and past-SLO gauges, at most every `QUEUE_METRICS_EVERY_S`."""
        if self._queue_observed_at is not None and (now - self._queue_observed_at).total_seconds() < QUEUE_METRICS_EVERY_S:
            return
        self._queue_observed_at = now
        pending = await self.repo.search(tenant_id=None, status="pending", limit=QUEUE_LIMIT)
        tenants = sorted({r.tenant_id for r in pending})
        slo = self.settings.decision_slo_s
        observe_queue({t: queue_age([r for r in pending if r.tenant_id == t], now, slo).by_risk for t in tenants})

    async def review_report(self, tenant_id: str | None, since_days: float) -> dict[str, Any]:
        """The reviews report (`reviews.review_report`) of the requests created in the last `since_days` days."""
        since = self.clock() - timedelta(days=since_days)
        records = await self.repo.search(tenant_id=tenant_id, status=None, limit=REPORT_LIMIT)
        return review_report(review_of(r) for r in records if r.kind == "approval" and r.created_at >= since)

    async def propose_undo(self, action_id: str, session: Session) -> ActionProposedData | Refusal:
        """Propose the undo of a succeeded call for an approver of its tenant: an ordinary proposal that policy decides.

        The proposal is signed by this service (`requested_by` is the approver) and names the original in `undoes`;
        another tenant's action is 404, as an unknown one; what cannot be undone now is 422 with the reason and what
        to do, by the rule `tidegate undo` applies (`servicekit.undo.undo_refusal`): an undo itself, an action undone
        already (or whose undo failed, is unknown, denied or pending), one that failed, was denied or has no result.
        The plan proposed is only ever the executor's signed one (`_undo_proofs`): a kept result whose event does not
        verify for this action is 422 `undo_irreversible`, saying why, and nothing is proposed.
        """
        case = await undo_case(self.undo_results, self.repo, action_id, self.authority) if session.link is None else None
        if case is None or not session.approver.may_see(case.tenant_id):
            return Refusal(code="not_found", status=404, message=f"no call {action_id} is known here")
        refused = undo_refusal(case.action, case.undo) if case.action is not None else None  # None: its kept row is refused
        if refused is not None:
            return Refusal(code=str(refused.code), status=422, message=refused.message)
        if case.refused is not None:  # the row's copy would have it proposed: the executor's signed event does not say so
            return Refusal(code=str(ReasonCode.UNDO_IRREVERSIBLE), status=422, message=case.refused.message)
        assert case.result is not None  # a call with a ready plan is a kept result, verified
        who = session.approver.approver
        proposal = undo_proposal(case.result, requested_by=who, proposer=f"undo:{who}", rationale=f"undo requested by {who}")
        await self.publisher.publish("actions.proposed", ActionProposed.build(proposal, source="tidegate/approval"))
        log.info("approval: %s proposed the undo of %s (%s)", who, action_id, proposal.tool)
        return proposal

    def review_reasons(self, tenant_id: str) -> dict[str, str]:
        """The reasons an approver of `tenant_id` may give for a reject or an edit: the defaults and the tenant's own."""
        record = self.control.tenants.get(tenant_id) if self.control is not None else None
        own = record.settings.get("review_reasons") if record is not None else None
        return dict(REVIEW_REASONS) | (dict(own) if isinstance(own, dict) else {})

    def _unknown_review_reason(self, tenant_id: str, reason: str | None) -> Refusal | None:
        taxonomy = self.review_reasons(tenant_id)
        if reason is None or reason in taxonomy:
            return None
        return Refusal(code="unknown_review_reason", status=422, message=f"review_reason {reason!r} is not one of: {', '.join(taxonomy)}")

    async def callback(self, tenant_id: str | None, endpoint_id: str, headers: Mapping[str, str], body: bytes) -> ApprovalRecord | Refusal:
        """An approver's decision posted back by their chat tool, verified per Standard Webhooks.

        In order: the endpoint exists, the signature is its secret's (`callback_endpoint`), the body
        parses, the message is new, the approver is one of the endpoint's, the request is of the
        endpoint's tenant (else the same 404 as a missing one), then the vote as over the API.
        """
        found = await self.callback_endpoint(tenant_id, endpoint_id, headers, body)
        if isinstance(found, Refusal):
            return found
        endpoint, msg_id = found
        try:
            doc = json.loads(body)
            decision = CallbackDecision.model_validate(doc.get("data") if isinstance(doc, dict) else None)
        except (ValueError, ValidationError) as exc:
            return Refusal(code="invalid_callback", status=422, message=f"callback body: {exc}"[:500])
        if not await self.repo.remember_message(endpoint.tenant_id, endpoint.endpoint_id, msg_id):
            return Refusal(code="replayed", status=409, message=f"message {msg_id} was already received (replay refused)")
        if decision.approver not in endpoint.approvers:
            return Refusal(code="not_endpoint_approver", status=403, message=f"{decision.approver} does not approve through this endpoint")
        record = await self.repo.get(decision.approval_id)
        if record is None or endpoint.tenant_id not in ("*", record.tenant_id):
            return domain.not_found(decision.approval_id)
        groups = await self.repo.groups_of(decision.approver, record.tenant_id)
        who = Approver(approver=decision.approver, tenant_id=record.tenant_id, groups=frozenset(groups), via="callback")
        vote = Vote(
            decision="approve" if decision.decision == "approve" else "reject",
            comment=decision.comment,
            review_reason=decision.review_reason,
            seen_digest=decision.action_digest,
            edited_args=decision.edited_args,
        )
        return await self.vote(decision.approval_id, Session(who), vote)

    # --- reading -------------------------------------------------------------------------------

    async def context(self, record: ApprovalRecord) -> dict[str, Any]:
        """The task's other events known here and its cost so far."""
        events = await self.repo.task_events(record.tenant_id, record.task_id)
        rows = [{"type": e.type, "action_id": e.action_id, "outcome": e.outcome, "cost_usd": e.cost_usd} for e in events]
        return {"events": [{**e.as_dict(), "args": e.args} for e in events], "cost": domain.cost_so_far(rows)}  # a decision's call

    def killswitch(self, tenant_id: str, tool: str) -> dict[str, Any] | None:
        """The kill switch that stops this tool for this tenant, if any (shown on the page)."""
        if self.control is None:
            return None
        switch = self.control.killed(tenant_id, tool)
        if switch is None:
            return None
        return {"tenant_id": switch.data.tenant_id, "tool": switch.data.tool, "reason": switch.data.reason, "set_by": switch.data.set_by}

    # --- background ----------------------------------------------------------------------------

    async def sweep(self) -> dict[str, int]:
        """Expire overdue requests, escalate waiting ones, republish what the outbox still holds."""
        now = self.clock()
        counts = {"expired": 0, "escalated": 0, "republished": 0}
        for record in await self.repo.overdue(now):
            transition = domain.expire(record, now)
            if transition is None:
                continue
            attributes = {Attr.SERVICE: "approval", Attr.APPROVAL: record.approval_id, Attr.TASK: record.task_id}
            with span("approval expire", parent=record.traceparent, attributes=attributes):  # the task's trace, like a vote
                outbox, deliveries = await self._announce(transition.record, transition.event_type) if transition.event_type else ([], [])
                if await self.repo.save(record.version, transition.record, outbox, deliveries):
                    await self._publish(outbox)
                    counts["expired"] += 1
                    if record.kind == "follow_up":  # nothing is published for it: the log says it, for the on-call engineer
                        log.warning(
                            "approval: follow-up %s of %s (tenant %s, %s) expired unresolved: whether the call took effect is "
                            "still unknown and the budget it held stays held; check the system of record",
                            record.approval_id,
                            record.action_id,
                            record.tenant_id,
                            record.tool,
                        )
        if self.settings.escalate_after_s is not None:
            after = timedelta(seconds=self.settings.escalate_after_s)
            for record in await self.repo.due_for_escalation(now - after):
                escalated = domain.escalate(record, now, after)
                if escalated is None:
                    continue
                _, deliveries = await self._announce(escalated, "tidegate.approval.escalated")
                if await self.repo.save(record.version, escalated, [], deliveries):
                    counts["escalated"] += 1
        await self._observe_queue(now)
        stale = now - timedelta(seconds=max(5.0, 2 * self.settings.sweep_interval_s))
        leftovers = await self.repo.unpublished(stale)
        await self._publish(leftovers)
        counts["republished"] = len(leftovers)
        return counts

    # --- helpers -------------------------------------------------------------------------------

    async def _announce(self, record: ApprovalRecord, event_type: str) -> tuple[list[OutboxItem], list[Delivery]]:
        """The bus event (requests and decisions of approvals; resolutions of follow-ups) and one webhook message per endpoint.

        A follow-up announces only its resolution on the bus: its opening is not an approval request
        (nothing waits on it to run), so it goes to the webhooks alone; so do an escalation and an edit
        (`approval.edited`: a partial vote changed the call the request awaits approval of).
        """
        outbox: list[OutboxItem] = []
        envelope_type = _ENVELOPES.get(event_type)
        data = None
        if envelope_type is not None and (record.kind == "approval" or event_type == domain.RESOLVED):
            data = (
                domain.unsigned_request(record) if event_type == domain.REQUESTED else domain.signed_decision(record, event_type, self.key)
            )
            event = envelope_type.build(data, source=SOURCE)
            made = record_event("approvals", event, self._signed)  # with the current trace context, signed, before it is stored
            outbox.append(OutboxItem(event.id, record.approval_id, "approvals", made.value.decode(), made))
        deliveries = [
            Delivery(
                delivery_id=f"msg_{uuid.uuid4().hex}",
                endpoint_id=endpoint.endpoint_id,
                tenant_id=endpoint.tenant_id,
                approval_id=record.approval_id,
                event_type=event_type.removeprefix("tidegate."),
                body=self._webhook_body(record, event_type, endpoint),
            )
            for endpoint in await self.repo.endpoints(record.tenant_id)
        ]
        return outbox, deliveries

    def _signed(self, event: Envelope) -> bytes:
        return encode_signed(event, self.key)

    async def _publish(self, outbox: Sequence[OutboxItem]) -> None:
        """Publish outbox entries as they were stored (byte for byte, on every attempt), then mark them published."""
        if not outbox:
            return
        await self.publisher.publish_many([item.made or Recorded.stored(item.topic, item.payload) for item in outbox])
        for item in outbox:  # marked once the broker has it: in a polled batch the publish returned when queued (`once_delivered`)
            await once_delivered(functools.partial(self.repo.mark_published, item.event_id))
            self.published += 1
