"""An escalated call's result is told with what granted it, whatever order the answer topics are read in.

The client reads `actions.decided`, `approvals` and `actions.results` independently (Kafka orders nothing across
topics), so the result of a human-approved call may be read before the grant (who approved, the args they edited)
and before the policy's re-decision (`via=approval`). These tests deliver the three topics in every order, through
`resume`, through a proposal made again (what an adapter does on resuming), and live, while `decision()` waits.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tidegate.client import ANSWER_TOPICS, ClientSettings, Escalated, Executed, Failed, MemoryTransport, Position, Progress, Tidegate
from tidegate.client.ledger import MemoryProposals
from tidegate.client.scripted import ScriptedTidegate

EDIT = {"payee_id": "cus_1", "amount_usd": 450.0}
ORDERS = list(itertools.permutations(ANSWER_TOPICS))


class OrderedBus(MemoryTransport):
    """A memory bus whose readers get the answer topics in `order`, and none of a `held` topic until it is released.

    A reader yields what is there topic by topic in `order` (the memory bus's history), so a result can be read
    before the approval that let it run; `delivered` counts what its readers were given of each topic.
    """

    def __init__(self) -> None:
        super().__init__()
        self.order: tuple[str, ...] = ANSWER_TOPICS
        self.held: set[str] = set()
        self.delivered: dict[str, int] = dict.fromkeys(ANSWER_TOPICS, 0)

    async def release(self, topic: str) -> None:
        async with self._changed:
            self.held.discard(topic)
            self._changed.notify_all()

    async def read(
        self, topics: tuple[str, ...], start: Position | None, *, caught_up: asyncio.Event | None = None
    ) -> AsyncIterator[tuple[str, Any]]:
        if topics != ANSWER_TOPICS:
            async for item in super().read(topics, start, caught_up=caught_up):
                yield item
            return
        topics = self.order
        next_index = {t: (start.offset(t, 0) if start else 0) for t in topics}

        def fresh() -> list[tuple[str, Any]]:
            items = [(t, e) for t in topics if t not in self.held for e in self.topics[t][next_index[t] :]]
            for t in topics:
                if t not in self.held:
                    next_index[t] = len(self.topics[t])
            return items

        def more() -> bool:
            return any(t not in self.held and len(self.topics[t]) > next_index[t] for t in topics)

        items = fresh()
        while True:
            for topic, event in items:
                self.delivered[topic] += 1
                yield topic, event
            if caught_up is not None:
                caught_up.set()
            async with self._changed:
                await self._changed.wait_for(more)
                items = fresh()


class OneByOneBus(MemoryTransport):
    """A memory bus whose readers get the history one event per turn of the loop, in the order it was published.

    As a Kafka reader takes a story in several fetches: the approval request may be read, and acted on, before the
    grant, re-decision and result published after it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.published: list[tuple[str, Any]] = []

    async def publish(self, topic: str, event: Any) -> None:
        await super().publish(topic, event)
        self.published.append((topic, self.topics[topic][-1]))

    async def read(
        self, topics: tuple[str, ...], start: Position | None, *, caught_up: asyncio.Event | None = None
    ) -> AsyncIterator[tuple[str, Any]]:
        if topics != ANSWER_TOPICS:
            async for item in super().read(topics, start, caught_up=caught_up):
                yield item
            return
        ends = await self.end(topics)
        for topic, event in self.published:
            if topic in topics and (start is None or self.topics[topic].index(event) >= start.offset(topic, 0)):
                yield topic, event
                await let_the_client_run()  # the next fetch: whoever waits on what was read so far acts on it first
        if caught_up is not None:
            caught_up.set()
        async for item in super().read(topics, ends):
            yield item


def rule(p: Any) -> tuple[str, str]:
    return ("escalate", "needs_human_approval") if p.args["amount_usd"] >= 500 else ("allow", "low_risk_write_allowed")


def refund(args: dict[str, Any]) -> dict[str, Any]:
    if args["payee_id"] == "cus_broken":
        raise RuntimeError("payments API said 502")
    return {"refunded": args["amount_usd"]}


def settings() -> ClientSettings:
    return ClientSettings(decision_timeout_s=5, result_timeout_s=5)


async def escalated_then_granted(bus: MemoryTransport, proposals: MemoryProposals, payee: str) -> Escalated:
    """One client proposes a 900 USD refund, a human grants it edited to 450 (with why), and it runs to its result."""
    governance = ScriptedTidegate(bus, rule, tools={"issue_refund": refund})
    async with governance, Tidegate(settings(), transport=bus, proposals=proposals, task_id="t-1") as first:
        escalated = await first.propose("issue_refund", {"payee_id": payee, "amount_usd": 900.0}, action_id="a-1")
        assert isinstance(escalated, Escalated)
        await grant_edited(governance, escalated, EDIT | {"payee_id": payee})
        assert isinstance(await escalated.decision(5), Executed | Failed)
    return escalated


async def grant_edited(governance: ScriptedTidegate, escalated: Escalated, edit: dict[str, Any]) -> None:
    await governance.approve(
        escalated.approval_id, "fin@acme.example", edit, comment="the rest was store credit", review_reason="wrong_amount"
    )


def assert_told_with_its_grant(outcome: Any, payee: str = "cus_1") -> None:
    assert isinstance(outcome, Executed | Failed), outcome
    assert outcome.via == "approval"
    assert outcome.edited_args == EDIT | {"payee_id": payee}
    assert (outcome.comment, outcome.review_reason) == ("the rest was store credit", "wrong_amount")
    if isinstance(outcome, Executed):
        assert (outcome.approver, outcome.approval_id is not None) == ("fin@acme.example", True)


@pytest.mark.parametrize("payee", ["cus_1", "cus_broken"], ids=["executed", "failed"])
@pytest.mark.parametrize("order", ORDERS, ids=["-".join(t.split(".")[-1] for t in o) for o in ORDERS])
async def test_resume_tells_an_approved_calls_result_with_its_grant_in_every_order_of_the_topics(
    order: tuple[str, ...], payee: str
) -> None:
    bus, proposals = OrderedBus(), MemoryProposals()
    escalated = await escalated_then_granted(bus, proposals, payee)
    bus.order = order
    async with Tidegate(settings(), transport=bus, proposals=proposals, task_id="t-1") as again:
        assert_told_with_its_grant(await again.resume("a-1", position=escalated.position, timeout_s=5), payee)


@pytest.mark.parametrize("payee", ["cus_1", "cus_broken"], ids=["executed", "failed"])
@pytest.mark.parametrize("order", ORDERS, ids=["-".join(t.split(".")[-1] for t in o) for o in ORDERS])
async def test_proposing_an_approved_call_again_tells_its_result_with_its_grant_in_every_order(order: tuple[str, ...], payee: str) -> None:
    """What an adapter does on resuming (the OpenAI SDK's tool, pydantic-ai's resumed call): never `Escalated`, never without the edit."""
    bus, proposals = OrderedBus(), MemoryProposals()
    await escalated_then_granted(bus, proposals, payee)
    bus.order = order
    async with Tidegate(settings(), transport=bus, proposals=proposals, task_id="t-1") as again:
        assert_told_with_its_grant(await again.propose("issue_refund", {"payee_id": payee, "amount_usd": 900.0}, action_id="a-1"), payee)


async def test_a_call_proposed_again_is_escalated_only_if_nothing_published_before_says_a_human_decided() -> None:
    """Read from its position one event at a time, the approval request comes before the grant: not `Escalated` for that."""
    bus, proposals = OneByOneBus(), MemoryProposals()
    await escalated_then_granted(bus, proposals, "cus_1")
    async with Tidegate(settings(), transport=bus, proposals=proposals, task_id="t-1") as again:
        assert_told_with_its_grant(await again.propose("issue_refund", {"payee_id": "cus_1", "amount_usd": 900.0}, action_id="a-1"))


@pytest.mark.parametrize("order", ORDERS, ids=["-".join(t.split(".")[-1] for t in o) for o in ORDERS])
async def test_a_live_wait_for_the_human_ends_only_once_the_grant_and_the_result_are_both_read(order: tuple[str, ...]) -> None:
    """The three topics' answers after the grant reach the waiting client one topic at a time, in `order`."""
    bus = OrderedBus()
    async with ScriptedTidegate(bus, rule, tools={"issue_refund": refund}) as governance, Tidegate(settings(), transport=bus) as client:
        escalated = await client.propose("issue_refund", {"payee_id": "cus_1", "amount_usd": 900.0})
        assert isinstance(escalated, Escalated)
        waiting = asyncio.create_task(escalated.decision(5))
        bus.held = set(ANSWER_TOPICS)
        await grant_edited(governance, escalated, EDIT)
        await eventually(lambda: len(bus.topics["actions.results"]) == 1)  # granted, decided again, run: all held from the client
        for topic in order[:-1]:
            await bus.release(topic)
            await eventually(lambda t=topic: bus.delivered[t] == len(bus.topics[t]))
            await let_the_client_run()
            assert not waiting.done(), waiting.result()  # a result without its grant, or a grant without its result
        await bus.release(order[-1])
        assert_told_with_its_grant(await waiting)


def test_progress_ends_an_escalated_call_only_once_its_grant_re_decision_and_result_are_all_read() -> None:
    bus = OrderedBus()
    asyncio.run(escalated_then_granted(bus, MemoryProposals(), "cus_1"))
    decided, redecided = bus.topics["actions.decided"]
    requested, granted = bus.topics["approvals"]
    [result] = bus.topics["actions.results"]
    for order in itertools.permutations([("approvals", granted), ("actions.decided", redecided), ("actions.results", result)]):
        progress = Progress("a-1", tenant_id="acme")
        progress.apply("actions.decided", decided)
        progress.apply("approvals", requested)
        for topic, event in order[:-1]:
            progress.apply(topic, event)
            assert progress.final() is None, [t for t, _ in order]
        progress.apply(*order[-1])
        assert_told_with_its_grant(progress.final())


async def eventually(check: Any, *, within_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not within the deadline"
        await asyncio.sleep(0.01)


async def let_the_client_run() -> None:
    """Let every task the delivery woke take its turn (loop iterations, not time): a waiter that would end has ended."""
    for _ in range(20):
        await asyncio.sleep(0)
