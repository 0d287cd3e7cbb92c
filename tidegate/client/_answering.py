"""How the serve loop answers its tool's invocations: several actions at once, each once, in time, acked in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from schemas import ErrorInfo, ToolInvocationData, ToolReply, ToolReplyData
from schemas.tools import EVERY_TENANT
from tidegate.client.client import Tidegate
from tidegate.client.ledger import CallLedger
from tidegate.client.served import ServedCall, ToolFailed, done_serving, serving
from tidegate.client.transport import Delivery, Transport

__all__ = ["RUNNING", "Answering", "InOrderAcks", "Run", "Turn", "error_reply", "signed_reply"]

log = logging.getLogger(__name__)

Run = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass
class Turn:
    """A delivery's place in the order of acks."""

    delivery: Delivery
    answered: bool = False


class InOrderAcks:
    """Acks deliveries in the order they came, each once it and every one before it are answered.

    A commit covers every offset before it: acked out of order, a call still running would be lost to a crash
    instead of delivered again (where the ledger answers it `outcome_unknown`).
    """

    def __init__(self) -> None:
        self._turns: deque[Turn] = deque()
        self._acking = asyncio.Lock()

    def arrived(self, delivery: Delivery) -> Turn:
        """Take `delivery`'s place in the order."""
        turn = Turn(delivery)
        self._turns.append(turn)
        return turn

    async def answered(self, turn: Turn) -> None:
        """`turn` is answered: ack it and those after it that are, once every earlier one is."""
        turn.answered = True
        async with self._acking:
            while self._turns and self._turns[0].answered:
                await self._turns[0].delivery.ack()
                self._turns.popleft()


@dataclass
class Answering:
    """One tool's serve loop: what it runs, the ledger of what it ran, the tenants it serves."""

    client: Tidegate
    tool: str
    run: Run
    ledger: CallLedger
    tenants: frozenset[str]
    _keys: dict[str, tuple[asyncio.Lock, int]] = field(default_factory=dict)

    async def answer(self, transport: Transport, invocation: Any) -> None:
        """Run one invocation (unless refused, answered before, of a tenant not served, or late) and reply."""
        expected_reply_topic = f"{self.client.settings.topic_prefix}tools.{self.tool}.replies"
        data: ToolInvocationData = invocation.data
        refusal = self.client.trust.refuses(invocation)
        if refusal is None and (data.tool != self.tool or data.reply_topic != expected_reply_topic):
            refusal = f"it names tool {data.tool} and reply topic {data.reply_topic}"
        if refusal is not None:  # nothing runs and nothing answers: the executor alone may ask, for a call the policy signed, in time
            log.warning(
                "refusing invocation %s of %s (action %s, tenant %s): %s", invocation.id, self.tool, data.action_id, data.tenant_id, refusal
            )
            return
        reply: dict[str, Any] | None
        if EVERY_TENANT in self.tenants or data.tenant_id in self.tenants:
            async with self._one_at_a_time(data.idempotency_key):  # the executor's retry of a call still running waits for it
                reply = await self._once(data)
        else:  # a genuine call the policy authorized, so it is answered (not dropped): the executor records the action failed, and why
            log.warning(
                "refusing invocation %s of %s (action %s): tenant %s is not served here",
                invocation.id,
                self.tool,
                data.action_id,
                data.tenant_id,
            )
            # The reply reaches the calling tenant: it names neither this client's tenant nor the tenants served.
            reply = error_reply("tenant_not_served", f"the process serving {self.tool} does not serve tenant {data.tenant_id}: nothing ran")
        if reply is None:  # its deadline passed: the executor stopped waiting, and a late "ok" would tell nobody the truth
            return
        answer = ToolReplyData(
            action_id=data.action_id, task_id=data.task_id, tenant_id=data.tenant_id, tool=self.tool, attempt=data.attempt, **reply
        )
        await transport.publish(f"tools.{self.tool}.replies", signed_reply(self.client, answer))

    async def _once(self, data: ToolInvocationData) -> dict[str, Any] | None:
        """The ledger's reply for a key answered before, `outcome_unknown` for one begun and never answered, else a run's.

        A key whose last run failed `retryable` runs again on a later attempt: the executor makes one only when the
        error allows it (and, if it may have taken effect, only for a tool the catalog says is safe to repeat).
        None when the deadline passed before the run began (it does not begin) or while it ran (it is cancelled).
        """
        key = data.idempotency_key
        begun, kept = self.ledger.lookup(key)
        if kept is not None and RUNNING in kept:  # begun again after a retryable failure, and never answered
            kept = None
        if kept is not None and not _tried_again(kept, data.attempt):
            return {field: kept[field] for field in ("ok", "result", "error") if field in kept}
        if begun and kept is None:
            reply = error_reply("outcome_unknown", "the process died while this call ran; it is not run again", maybe_applied=True)
        elif self._left_s(data) <= 0:  # it waited (for a free slot, or an earlier attempt of its action) past its deadline
            log.warning(
                "not running %s for action %s (attempt %d): its deadline passed before it could start",
                self.tool,
                data.action_id,
                data.attempt,
            )
            return None
        else:
            self.ledger.begin(key)
            if begun:  # a retry: marked running, so a crash during it is answered `outcome_unknown` as the first run's would be
                self.ledger.finish(key, {RUNNING: data.attempt})
            ran = await self._attempt(data)
            if ran is None:
                self.ledger.finish(key, _CANCELLED)
                return None
            reply = ran
        self.ledger.finish(key, reply | {_FOR_ATTEMPT: data.attempt})
        return reply

    async def _attempt(self, data: ToolInvocationData) -> dict[str, Any] | None:
        """Run the function until the invocation's deadline; its reply, or None when the deadline passed first."""
        token = serving(ServedCall.of(data))
        limit = asyncio.timeout(self._left_s(data))
        try:
            async with limit:
                reply: dict[str, Any] = {"ok": True, "result": await self.run(data.args)}
        except ToolFailed as exc:  # the function's own word on how it failed
            reply = error_reply(exc.type, exc.message, retryable=exc.retryable, maybe_applied=exc.maybe_applied)
        except Exception as exc:  # the function's failure is the tool's reply, not the server's
            if not limit.expired():
                log.warning("%s raised for action %s: %r (answered as maybe applied)", self.tool, data.action_id, exc, exc_info=exc)
            # How far it got is unknown here: a writing tool's action ends `unknown`, a read's `failed` (the executor knows the risk).
            reply = error_reply(type(exc).__name__, str(exc), maybe_applied=True)
        finally:
            done_serving(token)
        if limit.expired():
            log.warning(
                "%s for action %s (attempt %d) was still running at its deadline %s and was cancelled (or ended past it): "
                "nothing is sent; it may have taken effect",
                self.tool,
                data.action_id,
                data.attempt,
                data.deadline.isoformat(),
            )
            return None
        return reply

    def _left_s(self, data: ToolInvocationData) -> float:
        """Seconds until the invocation's deadline, on the clock the refusals read."""
        return data.deadline.timestamp() - self.client.trust.clock()

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, key: str) -> AsyncIterator[None]:
        lock, users = self._keys.get(key, (asyncio.Lock(), 0))
        self._keys[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._keys[key]
            if users == 1:
                del self._keys[key]
            else:
                self._keys[key] = (lock, users - 1)


def signed_reply(client: Tidegate, answer: ToolReplyData) -> ToolReply:
    """`answer` as the reply this client sends: from its proposer, signed with its tool key (what `_check_signs` tries first)."""
    return client.signer.sign(ToolReply.build(answer, source=f"urn:tidegate:client:{client.settings.proposer}"))


def error_reply(kind: str, message: str, *, retryable: bool = False, maybe_applied: bool = False) -> dict[str, Any]:
    """A reply that says the call failed, and how."""
    error = ErrorInfo(type=kind, message=message[:2000], retryable=retryable, maybe_applied=maybe_applied)
    return {"ok": False, "error": error.model_dump()}


RUNNING = "running_attempt"
"""A ledger reply holding only this key: the key runs again (after a retryable failure) and has not answered yet."""
_FOR_ATTEMPT = "for_attempt"  # kept beside a reply: which attempt it answered


def _tried_again(kept: dict[str, Any], attempt: int) -> bool:
    """Whether `attempt` is the executor's retry after a `retryable` failure kept for an earlier attempt (rows without one are final)."""
    error = kept.get("error") or {}
    return bool(error.get("retryable")) and attempt > kept.get(_FOR_ATTEMPT, attempt)


# What a later attempt of a key is told once the serve loop cancelled the key's run at its deadline: it is not run again.
_CANCELLED = error_reply(
    "deadline_passed", "an earlier attempt was cancelled at its deadline; it may have taken effect and is not run again", maybe_applied=True
)
