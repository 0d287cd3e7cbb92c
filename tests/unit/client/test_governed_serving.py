"""The serve loop: how a served function's failure is told, what it knows of its call, calls at once, and deadlines."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas import ActionAuthorizedData, ActionProposedData, Authorization, ToolInvocation, ToolInvocationData, action_digest
from schemas import authorization_message as signed_part
from tidegate.client import (
    MemoryLedger,
    MemoryTransport,
    ServedCall,
    Tidegate,
    ToolFailed,
    governed,
    serve_tool,
    served_call,
)
from tidegate.client.scripted import ScriptedTidegate
from tidegate.client.trust import DeploymentKeys
from tidegate.integrations._common import function_runner

REQUESTS, REPLIES = "tools.reorder_stock.requests", "tools.reorder_stock.replies"
GROUP = (REQUESTS, "tool-reorder_stock")
ARGS = {"sku": "KB-1", "quantity": 3}


@pytest.fixture
def bus() -> MemoryTransport:
    return MemoryTransport()


@pytest.fixture
def keys(bus: MemoryTransport) -> DeploymentKeys:
    made = DeploymentKeys()
    bus.trust = made.trust()
    return made


def invocation(keys: DeploymentKeys, action_id: str, *, attempt: int = 1, lasts: timedelta = timedelta(seconds=60)) -> ToolInvocation:
    """An invocation of `reorder_stock` as the executor sends it, signed, with the policy's signed authorization."""
    now = datetime.now(UTC)
    auth = Authorization(via="policy", policy_version="v1", action_digest=action_digest("acme", "reorder_stock", ARGS), issued_at=now,
                         expires_at=now + timedelta(minutes=5), key_id=keys.key_id("policy"), signature="")  # fmt: skip
    authorized = ActionAuthorizedData(
        action_id=action_id, task_id="t-1", tenant_id="acme", tool="reorder_stock", args=ARGS, authorization=auth
    )
    authorized = authorized.model_copy(
        update={"authorization": auth.model_copy(update={"signature": keys.sign("policy", signed_part(authorized))})}
    )
    data = ToolInvocationData(action_id=action_id, task_id="t-1", tenant_id="acme", tool="reorder_stock", args=ARGS,
                              idempotency_key=action_id, attempt=attempt, deadline=now + lasts,
                              reply_topic=f"tidegate.{REPLIES}", authorized=authorized)  # fmt: skip
    return keys.sign_event("executor", ToolInvocation.build(data, source="tidegate/executor"))


def replies(bus: MemoryTransport, action_id: str | None = None) -> list[Any]:
    return [r for r in bus.topics[REPLIES] if action_id is None or r.data.action_id == action_id]


def error_of(reply: Any) -> tuple[str, bool, bool]:
    return (reply.data.error.type, reply.data.error.retryable, reply.data.error.maybe_applied)


class PaymentsTimeout(ToolFailed):
    """The integrator's own kind of failure: its class name is the error's type."""


@pytest.mark.parametrize(
    ("raised", "told"),
    [
        (ToolFailed("payments API answered 503 before taking it", retryable=True), ("ToolFailed", True, False)),
        (PaymentsTimeout("read timed out after the request was sent", maybe_applied=True), ("PaymentsTimeout", False, True)),
        (ToolFailed("no such SKU", type="unknown_sku"), ("unknown_sku", False, False)),
        # An exception the function did not mean to say anything with: how far it got is unknown, so it may have taken effect.
        (RuntimeError("payments API said 502 Bad Gateway"), ("RuntimeError", False, True)),
    ],
)
async def test_a_served_functions_failure_is_replied_as_it_says_and_any_other_exception_as_maybe_applied(
    bus: MemoryTransport, keys: DeploymentKeys, wait_for: Any, raised: Exception, told: tuple[str, bool, bool]
) -> None:
    async def run(args: dict[str, Any]) -> dict[str, Any]:
        raise raised

    async with Tidegate(transport=bus) as tg:
        tg.run_in_background(serve_tool(tg, "reorder_stock", run, MemoryLedger()))
        await bus.publish(REQUESTS, invocation(keys, "e-1"))
        [reply] = await wait_for(lambda: replies(bus))
    assert (reply.data.ok, reply.data.error.message) == (False, str(raised))
    assert error_of(reply) == told


async def test_a_served_function_gets_its_action_id_to_pass_on_as_an_idempotency_key(
    bus: MemoryTransport, keys: DeploymentKeys, wait_for: Any
) -> None:
    """Declared (`tidegate_call`, never proposed as an arg) or asked for (`served_call()`), sync (in a thread) or async."""
    seen: list[tuple[str, str | None]] = []

    async def refund(sku: str, quantity: int, tidegate_call: ServedCall | None = None) -> str:
        assert tidegate_call is not None
        seen.append(("declared", tidegate_call.idempotency_key))
        return "ok"

    def plain(sku: str, quantity: int) -> str:
        call = served_call()
        seen.append(("asked", call.action_id if call else None))
        return "ok"

    async def run(args: dict[str, Any]) -> dict[str, Any]:
        return {"value": [await function_runner(refund)(args), await function_runner(plain)(args)]}

    async with Tidegate(transport=bus) as tg:
        tg.run_in_background(serve_tool(tg, "reorder_stock", run, MemoryLedger()))
        await bus.publish(REQUESTS, invocation(keys, "i-1"))
        await wait_for(lambda: replies(bus, "i-1"))
    assert seen == [("declared", "i-1"), ("asked", "i-1")]
    assert served_call() is None  # outside a served call


async def test_a_governed_function_declaring_tidegate_call_proposes_only_its_own_args(bus: MemoryTransport, wait_for: Any) -> None:
    keys_seen: list[str] = []

    def allow(p: ActionProposedData) -> tuple[str, str]:
        return "allow", "low_risk_write_allowed"

    async with ScriptedTidegate(bus, allow, topic_tools=("reorder_stock",)) as stack, Tidegate(transport=bus) as tg:

        @governed("reorder_stock", client=tg, ledger=MemoryLedger())
        def reorder_stock(sku: str, quantity: int, *, tidegate_call: ServedCall | None = None) -> int:
            assert tidegate_call is not None
            keys_seen.append(tidegate_call.idempotency_key)
            return quantity

        assert await reorder_stock("KB-1", 3) == 3
        [proposal] = stack.proposals
    assert proposal.args == {"sku": "KB-1", "quantity": 3}
    assert keys_seen == [proposal.action_id]


async def test_a_slow_call_does_not_hold_up_a_quick_one_and_acks_stay_in_order(
    bus: MemoryTransport, keys: DeploymentKeys, wait_for: Any
) -> None:
    release = asyncio.Event()
    started: list[str] = []

    async def run(args: dict[str, Any]) -> dict[str, Any]:
        action = served_call()
        assert action is not None
        started.append(action.action_id)
        if action.action_id == "slow":
            await release.wait()
        return {"ran": action.action_id}

    async with Tidegate(transport=bus) as tg:
        tg.run_in_background(serve_tool(tg, "reorder_stock", run, MemoryLedger()))
        await bus.publish(REQUESTS, invocation(keys, "slow"))
        await wait_for(lambda: started == ["slow"], what="the slow call running")
        await bus.publish(REQUESTS, invocation(keys, "quick"))
        [quick] = await wait_for(lambda: replies(bus, "quick"), what="the quick call's reply while the slow one runs")
        assert quick.data.result == {"ran": "quick"}
        assert replies(bus, "slow") == []
        # The quick request is answered but not acked past the slow one: a crash now delivers both again.
        assert bus._committed.get(GROUP, 0) == 0
        release.set()
        await wait_for(lambda: replies(bus, "slow"), what="the slow call's reply")
        await wait_for(lambda: bus._committed.get(GROUP) == 2, what="both acked")


async def test_a_retry_of_an_action_still_running_waits_for_it_and_gets_its_answer(
    bus: MemoryTransport, keys: DeploymentKeys, wait_for: Any
) -> None:
    release = asyncio.Event()
    ran: list[str] = []

    async def run(args: dict[str, Any]) -> dict[str, Any]:
        action = served_call()
        assert action is not None
        ran.append(action.action_id)
        if action.action_id == "r-1":
            await release.wait()
        return {"po": "PO-1"}

    async with Tidegate(transport=bus) as tg:
        tg.run_in_background(serve_tool(tg, "reorder_stock", run, MemoryLedger()))
        await bus.publish(REQUESTS, invocation(keys, "r-1"))
        await wait_for(lambda: ran, what="the first attempt running")
        await bus.publish(REQUESTS, invocation(keys, "r-1", attempt=2))
        await bus.publish(REQUESTS, invocation(keys, "other"))  # a call of another action is not held up meanwhile
        await wait_for(lambda: replies(bus, "other"), what="the other action's reply")
        assert replies(bus, "r-1") == []
        release.set()
        answers = await wait_for(lambda: len(replies(bus, "r-1")) == 2 and replies(bus, "r-1"), what="both attempts answered")
    assert [(r.data.attempt, r.data.result) for r in answers] == [(1, {"po": "PO-1"}), (2, {"po": "PO-1"})]
    assert ran == ["r-1", "other"]  # r-1 ran once


async def test_a_call_still_running_at_its_deadline_is_cancelled_and_nothing_is_sent(
    bus: MemoryTransport, keys: DeploymentKeys, wait_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The executor stopped waiting at the deadline: the refund must not complete minutes after it recorded `unknown`."""
    caplog.set_level(logging.WARNING)
    events: list[str] = []

    async def run(args: dict[str, Any]) -> dict[str, Any]:
        events.append("started")
        try:
            await asyncio.Event().wait()  # a payments API that never answers
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        return {}

    ledger = MemoryLedger()
    async with Tidegate(transport=bus) as tg:
        tg.run_in_background(serve_tool(tg, "reorder_stock", run, ledger))
        await bus.publish(REQUESTS, invocation(keys, "d-1", lasts=timedelta(seconds=2)))
        await wait_for(lambda: events == ["started", "cancelled"], timeout=30, what="the call cancelled at its deadline")
        await wait_for(lambda: bus._committed.get(GROUP) == 1, what="the request acked")
        assert replies(bus) == []
        assert "was still running at its deadline" in caplog.text
        # The executor's next attempt of that key (a tool safe to repeat) is told it may have happened; it does not run again.
        await bus.publish(REQUESTS, invocation(keys, "d-1", attempt=2))
        [again] = await wait_for(lambda: replies(bus, "d-1"))
    assert error_of(again) == ("deadline_passed", False, True)
    assert events == ["started", "cancelled"]


async def test_a_sync_function_past_its_deadline_is_not_answered_and_says_when_it_ends_late(
    bus: MemoryTransport, keys: DeploymentKeys, wait_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A thread cannot be stopped; other calls are served meanwhile, and the log says that it finished after the executor gave up."""
    caplog.set_level(logging.WARNING)
    release = threading.Event()

    def reorder_stock(sku: str, quantity: int) -> int:
        if served_call() is not None and served_call().action_id == "sync-slow":  # type: ignore[union-attr]
            release.wait(60)
        return quantity

    runner = function_runner(reorder_stock)

    async def run(args: dict[str, Any]) -> dict[str, Any]:
        return {"value": await runner(args)}

    async with Tidegate(transport=bus) as tg:
        tg.run_in_background(serve_tool(tg, "reorder_stock", run, MemoryLedger()))
        await bus.publish(REQUESTS, invocation(keys, "sync-slow", lasts=timedelta(seconds=2)))
        await bus.publish(REQUESTS, invocation(keys, "sync-quick"))
        await wait_for(lambda: replies(bus, "sync-quick"), what="the quick call answered while a thread is busy")
        await wait_for(lambda: "was still running at its deadline" in caplog.text, timeout=30, what="the deadline")
        release.set()
        await wait_for(lambda: "finished after its deadline" in caplog.text, timeout=30, what="the late finish logged")
        assert replies(bus, "sync-slow") == []


async def test_the_number_of_calls_at_once_is_at_least_one(bus: MemoryTransport, keys: DeploymentKeys) -> None:
    async def run(args: dict[str, Any]) -> dict[str, Any]:
        return {}

    async with Tidegate(transport=bus) as tg:
        with pytest.raises(ValueError, match="at least 1"):
            serve_tool(tg, "reorder_stock", run, MemoryLedger(), concurrency=0)


async def test_a_retryable_failure_runs_again_on_the_executors_next_attempt_and_only_then(
    bus: MemoryTransport, keys: DeploymentKeys, wait_for: Any
) -> None:
    """The executor retries only what the error allows; the same attempt delivered again is answered from the ledger."""
    ran: list[int] = []

    async def run(args: dict[str, Any]) -> dict[str, Any]:
        call = served_call()
        assert call is not None
        ran.append(call.attempt)
        if call.attempt == 1:
            raise ToolFailed("supplier busy: nothing ordered", retryable=True)
        return {"po": "PO-1"}

    ledger = MemoryLedger()
    async with Tidegate(transport=bus) as tg:
        tg.run_in_background(serve_tool(tg, "reorder_stock", run, ledger))
        for attempt in (1, 1, 2, 2):  # each attempt delivered twice
            await bus.publish(REQUESTS, invocation(keys, "t-1", attempt=attempt))
        answers = await wait_for(lambda: len(replies(bus)) == 4 and replies(bus))
    assert [(r.data.attempt, r.data.ok) for r in answers] == [(1, False), (1, False), (2, True), (2, True)]
    assert ran == [1, 2]
    # A process that dies while a retry runs leaves it begun and unanswered, as a first run: never run a third time.
    ledger.finish("t-1", {"running_attempt": 3})
    ran.clear()
    async with Tidegate(transport=bus) as tg:
        tg.run_in_background(serve_tool(tg, "reorder_stock", run, ledger))
        await bus.publish(REQUESTS, invocation(keys, "t-1", attempt=3))
        [crashed] = await wait_for(lambda: [r for r in replies(bus) if r.data.attempt == 3])
    assert error_of(crashed) == ("outcome_unknown", False, True)
    assert ran == []
