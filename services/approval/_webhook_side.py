"""The approval service's webhook side: the messages sent to the endpoints approvers register, and their bodies.

Part of `ApprovalService` (`services.approval.service` composes it), over the same repository and settings; registering
and enrolling endpoints is `_webhook_endpoints_admin`'s.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from servicekit import Authority, SigningKey, ToolCatalog
from servicekit.costs import ReviewPrice
from servicekit.metrics import observe_webhook_delivery, observe_webhook_owed
from services.approval import auth, domain, webhooks
from services.approval._decision_proofs import as_signed
from services.approval._message_proofs import (
    HELD,
    SIGNED_AGAIN,
    UNADOPTED_FIX,
    sealed,
    signed_again_id,
    unproven,
    unsigned_refusal,
    unsigned_then,
    unsigned_unsent,
)
from services.approval._row_proofs import Seals
from services.approval._summary import decision_summary
from services.approval.domain import ApprovalRecord, Approver, GroupsConfig, Refusal
from services.approval.repository import ApprovalRepository, Delivery, Endpoint
from services.approval.settings import ApprovalSettings

log = logging.getLogger(__name__)

__all__ = ["WebhookSide", "owed_message_id"]

FOLLOW_UP = "tidegate.approval.follow_up"
HOLD_RECHECK_S = 120.0  # an unsigned message of a request not adopted yet is looked at again at least this often


def owed_message_id(tenant_id: str, endpoint_id: str, approval_id: str) -> str:
    """The `webhook-id` of the message a request owes an endpoint: one id per endpoint and request, so it is written once."""
    digest = hashlib.sha256("\0".join(("owed", tenant_id, endpoint_id, approval_id)).encode()).hexdigest()
    return f"msg_{digest[:32]}"


def _pending_edit(record: ApprovalRecord) -> dict[str, Any] | None:
    """A pending request's edit: the args the approvals counted so far are for instead of `args`, who edited, and why."""
    if not record.is_pending or record.edited_args is None:
        return None
    edit = domain.pending_editor(record)
    return {
        "edited_args": record.edited_args,
        "by": edit.approver if edit is not None else (record.approvers[0] if record.approvers else None),
        "comment": edit.comment if edit is not None else None,
        "review_reason": edit.review_reason if edit is not None else None,
        "at": edit.at.isoformat() if edit is not None else None,
        "approvers": record.approvers,
    }


class WebhookSide:
    """Delivering due messages, queueing the ones owed, writing a message's body; the service sets the attributes."""

    repo: ApprovalRepository
    key: SigningKey
    groups: GroupsConfig
    settings: ApprovalSettings
    review_price: ReviewPrice
    catalog: ToolCatalog | None
    sender: webhooks.WebhookSender | None
    authority: Authority | None
    seals: Seals | None
    clock: Callable[[], datetime]
    issuing_clock: Callable[[], datetime] | None
    base_url: Callable[[], str]
    _turns: dict[tuple[str, str], asyncio.Task[int]]
    _webhook_gate: asyncio.Semaphore | None
    _tokenless_told: set[tuple[str, str, str, str]]

    def access(self, record: ApprovalRecord, who: Approver, *, rejecting: bool = False) -> Refusal | None:
        """Whether `who` may decide `record` (`domain.check_access`); the service narrows it to the groups the policy counts."""
        return domain.check_access(record, who, self.groups, rejecting=rejecting)

    async def deliver_webhooks(self, *, wait_s: float | None = None) -> int:
        """Send due webhook messages once each, endpoints side by side; failures are retried later with exponential backoff.

        This layer owns the retries of a message (the sender makes one attempt). Each endpoint's claimed messages go one at
        a time in the order they fell due, at most `webhook_concurrency` attempts at once over all endpoints, so a slow or
        hanging receiver holds up only its own messages. A round starts attempts for `webhook_timeout_s` and each lasts at
        most that long, so the lease (three times it, and 10 s) outlives the round: no other copy sends a claimed message
        too. Claimed messages not started in time are given back, due at once.

        A round waits for its endpoints' turns for at most `wait_s` (None: until they end); a turn still going on then goes
        on by itself, and later rounds give its endpoint's newly claimed messages back until it ends. So a hanging receiver
        delays the next round, and every other endpoint's next message, by `wait_s` at most, not by its attempts' timeout.
        Returns how many messages the turns that ended in the round delivered.
        """
        await self.queue_owed()
        sender = self.sender
        if sender is None:
            return 0
        timeout_s = self.settings.webhook_timeout_s
        claimed = await self.repo.claim_due_deliveries(self.clock(), self._lease())
        queues: dict[tuple[str, str], list[tuple[Delivery, Endpoint]]] = {}
        for delivery, endpoint in claimed:
            queues.setdefault((endpoint.tenant_id, endpoint.endpoint_id), []).append((delivery, endpoint))
        busy = [d.delivery_id for key, queue in queues.items() if key in self._turns for d, _ in queue]
        if busy:  # that endpoint's earlier turn still holds its one attempt at a time
            await self.repo.release_deliveries(busy, self.clock())
        if self._webhook_gate is None:  # one for the turns of every round: some go on past theirs
            self._webhook_gate = asyncio.Semaphore(self.settings.webhook_concurrency)
        gate = self._webhook_gate
        last_start = asyncio.get_running_loop().time() + timeout_s
        turns = [self._start_turn(key, sender, queue, gate, last_start) for key, queue in queues.items() if key not in self._turns]
        if not turns:
            return 0
        done, _ = await asyncio.wait(turns, timeout=wait_s)
        return sum(turn.result() for turn in done if not turn.cancelled() and turn.exception() is None)

    def _lease(self) -> timedelta:
        """How long a claimed message is held from other rounds and copies: it outlives a round's attempts."""
        return timedelta(seconds=self.settings.webhook_timeout_s * 3 + 10)

    async def queue_owed(self) -> int:
        """Write the messages owed to endpoints registered again after their row was refused, and count what refused ones are owed.

        One message per request of the endpoint's tenant still pending and not expired that it has none of (a message failed
        because its row was refused counts as none): the request's message as it would be written now, with an id derived
        from the endpoint and the request, so a registration repeated, a round run again or by another copy writes it once.
        Requests decided or expired meanwhile owe nothing. From then on it is a message like any other: signed at each
        attempt, retried, sent in its endpoint's turn. Each endpoint still refused sets `tidegate_webhook_messages_owed`.
        Returns how many messages were written.
        """
        now = self.clock()
        written = 0
        for endpoint in await self.repo.owed_endpoints():
            owed = [await self.repo.get(approval_id) for approval_id in await self.repo.owed_requests(endpoint, now)]
            messages = [self._owed_message(record, endpoint) for record in owed if record is not None]
            queued = await self.repo.queue_owed(endpoint, messages, now)
            written += queued
            log.info(
                "approval: %d messages owed to endpoint %s of %s (registered again after its row was refused) queued",
                queued,
                endpoint.endpoint_id,
                endpoint.tenant_id,
            )
        refused = await self.repo.refused_endpoints()  # the enabled rows, each verified only when it changed
        counts = await self.repo.owed_counts(refused, now)
        observe_webhook_owed({(e.tenant_id, e.endpoint_id): n for e, n in zip(refused, counts, strict=True)})
        return written

    def _owed_message(self, record: ApprovalRecord, endpoint: Endpoint, delivery_id: str | None = None) -> Delivery:
        """The message `record` owes `endpoint`: what `_announce` writes when a request is raised, as the request is now.

        `delivery_id`: its id (default: `owed_message_id`'s).
        """
        event_type = domain.REQUESTED if record.kind == "approval" else FOLLOW_UP
        message = Delivery(
            delivery_id=delivery_id or owed_message_id(endpoint.tenant_id, endpoint.endpoint_id, record.approval_id),
            endpoint_id=endpoint.endpoint_id,
            tenant_id=endpoint.tenant_id,
            approval_id=record.approval_id,
            event_type=event_type.removeprefix("tidegate."),
            body=self._webhook_body(record, event_type, endpoint),
        )
        return sealed(self.seals, message)

    def _start_turn(
        self,
        key: tuple[str, str],
        sender: webhooks.WebhookSender,
        queue: Sequence[tuple[Delivery, Endpoint]],
        gate: asyncio.Semaphore,
        last_start: float,
    ) -> asyncio.Task[int]:
        """Start one endpoint's turn as a task of its own, known as going on (`_turns`) until it ends."""

        async def turn() -> int:
            try:
                delivered, left = await self._deliver_in_turn(sender, queue, gate, last_start)
                if left:
                    await self.repo.release_deliveries(left, self.clock())
                return delivered
            except Exception:  # a database gone mid-turn: its messages' leases run out and a later round claims them again
                log.exception("approval: webhook deliveries to endpoint %s of %s stopped; their leases will run out", key[1], key[0])
                return 0
            finally:
                self._turns.pop(key, None)

        task = self._turns[key] = asyncio.get_running_loop().create_task(turn(), name=f"webhooks:{key[0]}/{key[1]}")
        return task

    async def stop_webhook_turns(self) -> None:
        """Cancel the turns still going on (the process stops): their messages' leases run out, and another copy sends them."""
        turns = list(self._turns.values())
        for turn in turns:
            turn.cancel()
        await asyncio.gather(*turns, return_exceptions=True)

    async def _deliver_in_turn(
        self, sender: webhooks.WebhookSender, queue: Sequence[tuple[Delivery, Endpoint]], gate: asyncio.Semaphore, last_start: float
    ) -> tuple[int, list[str]]:
        """One endpoint's messages, one attempt at a time, none started after `last_start`: (delivered, ids not attempted)."""
        delivered = 0
        for done, (delivery, endpoint) in enumerate(queue):
            async with gate:
                if asyncio.get_running_loop().time() >= last_start:
                    return delivered, [d.delivery_id for d, _ in queue[done:]]
                delivered += await self._attempt(sender, delivery, endpoint)
        return delivered, []

    async def _attempt(self, sender: webhooks.WebhookSender, delivery: Delivery, endpoint: Endpoint) -> bool:
        """One attempt of one message, logged, counted and moved on (delivered, pending until the next try, or failed)."""
        now = await self.repo.endpoint(endpoint.tenant_id, endpoint.endpoint_id)
        if now is None or not now.enabled:  # removed by an admin since this round claimed it: never sent, links never minted
            log.info("approval: message %s not sent: its endpoint %s was removed", delivery.delivery_id, endpoint.endpoint_id)
            return False
        if self.seals is not None and unsigned_then(delivery):  # queued by a release before 24: never sent as stored
            await self._sign_again(delivery, endpoint)
            return False
        if (why := unproven(self.seals, delivery)) is not None:  # its body signed with the secret only if the service wrote it
            await self.repo.record_attempt(
                delivery.delivery_id, delivery.attempts + 1, status_code=None, error=why, duration_ms=0.0, outcome="failed", next_at=None
            )
            observe_webhook_delivery(endpoint.tenant_id, "failed")
            return False
        body, retry_until = await self._attempt_body(delivery, endpoint)
        at = self.clock()
        headers = webhooks.signed_headers(endpoint.secret, delivery.delivery_id, int(at.timestamp()), body, former=endpoint.former_at(at))
        result = await sender.send(endpoint.url, headers, body)
        attempt = delivery.attempts + 1
        outcome, next_at = self._next_step(attempt, result.ok, retry_until)
        answered = self.clock()  # the receiver answers: its messages waiting out a backoff (it was down) are due now
        await self.repo.record_attempt(
            delivery.delivery_id,
            attempt,
            status_code=result.status_code,
            error=result.error,
            duration_ms=result.duration_ms,
            outcome=outcome,
            next_at=next_at,
            waiting_due=(answered, answered + self._lease()),  # past any lease: a message another round holds is left alone
        )
        observe_webhook_delivery(endpoint.tenant_id, "retried" if outcome == "pending" else outcome)
        return result.ok

    async def _sign_again(self, delivery: Delivery, endpoint: Endpoint) -> None:
        """An unsigned message (queued by a release before 24): its request's message written again, signed, or failed with why.

        Written again when its request is a pending approval of `endpoint`'s tenant shown as the policy signed it, the check
        every showing makes (`as_signed`): the new message is made from that, as `_announce` would now, never from the stored
        body, so a body the database login wrote is never sent; once per endpoint and request (`signed_again_id`).
        """
        assert self.seals is not None
        record = await self.repo.get(delivery.approval_id)
        attempt = delivery.attempts + 1
        if record is not None and self._not_adopted_yet(record, delivery, endpoint):
            await self._hold(delivery, endpoint, record)
            return
        found = ("its request is not in the database", True) if record is None else self._not_to_sign_again(record, delivery, endpoint)
        if record is None or found is not None:
            why, suspect = found or ("", True)
            if suspect:  # what the login's rows look like: told as a refused row, and counted
                error = unsigned_refusal(self.seals, delivery, why)
            else:
                error = unsigned_unsent(why)
                log.info("approval: message %s was queued unsigned by a release before 24: %s", delivery.delivery_id, error)
            await self.repo.record_attempt(
                delivery.delivery_id, attempt, status_code=None, error=error, duration_ms=0.0, outcome="failed", next_at=None
            )
            observe_webhook_delivery(endpoint.tenant_id, "failed")
            return
        message = self._owed_message(record, endpoint, signed_again_id(endpoint.tenant_id, endpoint.endpoint_id, record.approval_id))
        instead = f"{SIGNED_AGAIN} {message.delivery_id}"
        written = await self.repo.queue_instead(delivery.delivery_id, attempt, instead, message, self.clock())
        log.info(
            "approval: message %s (request %s) was queued unsigned by a release before 24: not sent; %s",
            delivery.delivery_id,
            record.approval_id,
            f"the request's message queued again, signed, as {message.delivery_id}"
            if written
            else f"the request's signed message {message.delivery_id} was queued before",
        )

    def _not_adopted_yet(self, record: ApprovalRecord, delivery: Delivery, endpoint: Endpoint) -> bool:
        """Whether `record` is pending, of `endpoint`'s tenant, and keeps no signed event yet: opened by an older release.

        `tidegate approvals adopt` keeps that event (the policy's escalation; a follow-up's `action.unknown`, since 25); until
        the operator runs it, the request is not proven, and its unsigned message waits rather than being failed for that.
        """
        return (
            record.is_pending
            and record.decision is None
            and record.expires_at > self.clock()
            and endpoint.tenant_id in ("*", record.tenant_id)
            and delivery.tenant_id == endpoint.tenant_id
        )

    async def _hold(self, delivery: Delivery, endpoint: Endpoint, record: ApprovalRecord) -> None:
        """An unsigned message of a request not adopted yet: tried again later (proven by then: signed again), never sent as stored.

        Tried again with the usual backoff, but at least every `HOLD_RECHECK_S` and whatever `webhook_max_attempts` says (a
        message that waited out a long outage is sent within minutes of the adoption), until its request expires; then
        failed saying why.
        """
        attempt = delivery.attempts + 1
        settings = self.settings
        delay = webhooks.backoff(attempt, initial_s=settings.webhook_backoff_initial_s, max_s=settings.webhook_backoff_max_s)
        due = self.clock() + min(delay, timedelta(seconds=HOLD_RECHECK_S))
        outcome = "pending" if due < record.expires_at else "failed"
        next_at = due if outcome == "pending" else None
        why = f"its request keeps no signed event yet (opened before release {25 if record.kind == 'follow_up' else 23}): {UNADOPTED_FIX}"
        error = f"{HELD} ({why})" if outcome == "pending" else unsigned_unsent(why)
        await self.repo.record_attempt(
            delivery.delivery_id, attempt, status_code=None, error=error, duration_ms=0.0, outcome=outcome, next_at=next_at
        )
        if not (delivery.last_error or "").startswith(HELD) or outcome == "failed":  # the first hold, and the end: told
            log.warning(
                "approval: message %s (request %s) was queued unsigned by a release before 24: %s",
                delivery.delivery_id,
                record.approval_id,
                error,
            )
        if outcome == "failed":
            observe_webhook_delivery(endpoint.tenant_id, "failed")

    def _not_to_sign_again(self, record: ApprovalRecord, delivery: Delivery, endpoint: Endpoint) -> tuple[str, bool] | None:
        """Why an unsigned message's request gets no signed message in its place, and whether that is suspect (None: it gets one).

        Suspect (told as a refused row, counted): a request of another tenant than the endpoint's, or not as the policy (a
        follow-up: the executor) signed it. Not suspect: a request settled or expired, as release 23 left many (nothing to
        ask now). A follow-up is written again as a request is: from the executor's signed `action.unknown` it keeps.
        """
        if endpoint.tenant_id not in ("*", record.tenant_id) or delivery.tenant_id != endpoint.tenant_id:
            return f"its request is of tenant {record.tenant_id}, not sent to endpoint {endpoint.endpoint_id} of {endpoint.tenant_id}", True
        if not record.is_pending or record.expires_at <= self.clock():
            return f"its request is {record.status if not record.is_pending else 'expired'}: nothing is left to ask", False
        shown = as_signed(record, self.authority, self.seals)
        if shown.not_as_signed is not None:
            return shown.not_as_signed, True
        return None

    def _next_step(self, attempt: int, ok: bool, retry_until: datetime | None) -> tuple[str, datetime | None]:
        """Where an attempt leaves its message: `delivered`, `pending` until the next try, or `failed`.

        Failed: no attempts left, or the next one would come after `retry_until` (a request expired by then needs no decision).
        """
        if ok:
            return "delivered", None
        delay = webhooks.backoff(attempt, initial_s=self.settings.webhook_backoff_initial_s, max_s=self.settings.webhook_backoff_max_s)
        next_at = self.clock() + delay
        settings = self.settings
        if attempt >= settings.webhook_max_attempts or (retry_until is not None and next_at >= retry_until):
            return "failed", None
        return "pending", next_at

    async def _attempt_body(self, delivery: Delivery, endpoint: Endpoint) -> tuple[bytes, datetime | None]:
        """The body of one attempt, and until when a message asking for a decision is worth retrying (its request's expiry).

        The body is the message as stored, with a one-time link for each approver `endpoint` lists now who may decide the
        request (`_link_holders`). Links are minted here, never stored: `endpoint` is the row this attempt is sent to, read
        at once with its URL, secret and approvers, so a link only ever goes to the URL and secret its approver enrolled. A
        message queued before an admin re-pointed the endpoint carries the links of the approvers listed after the change
        (the change dropped the others), and none once the request is settled.
        """
        message = json.loads(delivery.body)
        data = message["data"]
        data.pop("links", None)  # minted for the endpoint as it was (a message an older copy of the service stored)
        retry_until = None
        if data.get("status") == "pending":
            record = await self.repo.get(delivery.approval_id)
            if record is not None:
                retry_until = record.expires_at
            holders = endpoint.link_holders_at(self.clock())  # during a rotation's overlap, those listed before it too
            if record is not None and record.is_pending and holders:
                data["links"] = self._links(record, await self._link_holders(record, holders, endpoint))
        return json.dumps(message).encode(), retry_until

    async def _link_holders(self, record: ApprovalRecord, approvers: Sequence[str], endpoint: Endpoint) -> list[str]:
        """Those of `approvers` who may decide `record` now: never its requester (four eyes), nor anyone outside its groups.

        A link of anyone else could not decide the request, and would only be one more credential in the message. One
        listed on `endpoint` who holds no live token in the request's tenant gets none (a link dies with its approver's
        tokens): said once, as a WARNING (`_tell_tokenless`).
        """
        holders = []
        for approver in approvers:
            groups = frozenset(await self.repo.groups_of(approver, record.tenant_id))
            if not self._tell_tokenless(endpoint, approver, record.tenant_id, holds_token=bool(groups)):
                continue
            who = Approver(approver=approver, tenant_id=record.tenant_id, groups=groups, via="link")
            if self.access(record, who) is None:  # the groups the policy counts too: a link of anyone else could never grant
                holders.append(approver)
        return holders

    def _tell_tokenless(self, endpoint: Endpoint, approver: str, tenant_id: str, *, holds_token: bool) -> bool:
        """`holds_token`; when False, a WARNING naming the endpoint and the approver, once until they hold a token again.

        The demo's first messages reached the chat with `links: {}` and no line said why (approver2am): the endpoint
        listed approvers the tenant had made no token for. Its view says so too (`approvers_without_token`).
        """
        told = (endpoint.tenant_id, endpoint.endpoint_id, tenant_id, approver)
        if holds_token:
            self._tokenless_told.discard(told)
            return True
        if told not in self._tokenless_told:
            self._tokenless_told.add(told)
            log.warning(
                "approval: webhook endpoint %s (tenant %s) lists %s, who holds no live token in tenant %s: its messages carry no "
                "one-time link for them until they do (`tidegate approvals token create --approver %s --tenant %s --groups …`)",
                endpoint.endpoint_id,
                endpoint.tenant_id,
                approver,
                tenant_id,
                approver,
                tenant_id,
            )
        return False

    def _links(self, record: ApprovalRecord, approvers: Sequence[str]) -> dict[str, str]:
        """A one-time link to `record` for each of `approvers`, valid until the request expires (at most `link_ttl_s`)."""
        base = self.base_url().rstrip("/")
        issued = (self.issuing_clock or self.clock)()  # the broker's time: a host ahead does not lengthen a link
        expiry = min(record.expires_at, issued + timedelta(seconds=self.settings.link_ttl_s))
        return {
            approver: f"{base}/?approval={quote(record.approval_id)}#link="
            + auth.issue_link(self.key, approval_id=record.approval_id, approver=approver, tenant_id=record.tenant_id, expires_at=expiry)
            for approver in approvers
        }

    def _webhook_body(self, record: ApprovalRecord, event_type: str, endpoint: Endpoint) -> str:
        """The message as stored: everything but the one-time links, which each attempt adds (`_attempt_body`).

        What the request shows is what the policy signed (`_decision_proofs`), never the database login's text; `not_as_signed`
        says why the row was not that (approving is then refused).
        """
        shown = as_signed(record, self.authority, self.seals)
        record, not_as_signed = shown.record, shown.not_as_signed
        base = self.base_url().rstrip("/")
        payload: dict[str, Any] = {
            "approval_id": record.approval_id,
            "kind": record.kind,
            "status": record.status,
            "tenant_id": record.tenant_id,
            "task_id": record.task_id,
            "action_id": record.action_id,
            "tool": record.tool,
            "args": record.args,
            "action_digest": record.action_digest,
            "reasons": [r.model_dump(mode="json") for r in record.reasons],
            "risk": record.risk,
            "requested_by": record.requested_by,
            "task_requested_by": record.task_requested_by,  # four eyes: neither may approve (no link is made for either)
            "expires_at": record.expires_at.isoformat(),
            "decided_by": record.decided_by,
            "approvers": domain.approvals_of(record),  # who approved: never a rejecter (`rejected_by`)
            "rejected_by": record.decided_by if record.status == "rejected" else None,
            # While pending: the edit an approver made, which the next approvals are for (`approval.edited` announces it).
            "pending_edit": _pending_edit(record),
            "votes": [v.model_dump(mode="json") for v in record.votes],  # each approver's vote, comment and reason, in order
            # A decision's own words: the args that run instead of `args` (an approval with edits), the comment and the reason.
            "edited_args": record.edited_args if record.status == "granted" else None,
            "comment": record.comment,
            "review_reason": record.review_reason,
            "resolution": record.resolution,
            # What a person needs to decide it (the page's summary): a chat message can show the amount, payee and record.
            "summary": decision_summary(record, self.catalog, self.review_price, quotes=False),
            "not_as_signed": not_as_signed,
            "page_url": f"{base}/?approval={quote(record.approval_id)}",
            "callback_url": f"{base}/api/v1/callbacks/{quote(endpoint.tenant_id, safe='')}/{quote(endpoint.endpoint_id)}",
        }
        return json.dumps({"type": event_type.removeprefix("tidegate."), "timestamp": self.clock().isoformat(), "data": payload})
