"""`resume_many`: how many earlier proposals ended, from one read of the answer topics per position, each from its own.

What a sweep over waiting approvals (Temporal, Step Functions) asks: one reader for a thousand rows, not a thousand
readers; each row still answered exactly as `resume` would answer it, by its tenant's events from its own position on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from schemas import ActionProposedData
from tidegate.client import (
    ANSWER_TOPICS,
    ActionIdReused,
    ClientSettings,
    Denied,
    Escalated,
    Executed,
    MemoryTransport,
    Position,
    Rejected,
    SyncTidegate,
    Tidegate,
)
from tidegate.client.scripted import ScriptedTidegate

SHARED = "shared-id-42"


def rule(p: ActionProposedData) -> tuple[str, str]:
    if p.args.get("quantity", 0) >= 1000:
        return "deny", "budget_exceeded"
    return ("escalate", "needs_human_approval") if p.args.get("quantity", 0) >= 100 else ("allow", "low_risk_write_allowed")


class CountedBus(MemoryTransport):
    """A memory bus that counts the readers of the answer topics opened on it."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def read(
        self, topics: tuple[str, ...], start: Position | None, *, caught_up: asyncio.Event | None = None
    ) -> AsyncIterator[tuple[str, Any]]:
        if topics == ANSWER_TOPICS:
            self.reads += 1
        return super().read(topics, start, caught_up=caught_up)


@pytest.fixture
def bus() -> CountedBus:
    return CountedBus()


@pytest.fixture
async def stack(bus: CountedBus) -> AsyncIterator[ScriptedTidegate]:
    async with ScriptedTidegate(bus, rule, tools={"reorder_stock": lambda args: {"po": f"PO-{args['sku']}"}}) as scripted:
        yield scripted


def tenant(name: str) -> ClientSettings:
    return ClientSettings(tenant=name, principal=f"agent@{name}.example", decision_timeout_s=5)


async def escalated(tg: Tidegate, sku: str, action_id: str | None = None) -> Escalated:
    outcome = await tg.propose("reorder_stock", {"sku": sku, "quantity": 300}, action_id=action_id)
    assert isinstance(outcome, Escalated), outcome
    return outcome


async def test_one_read_answers_every_settled_action_in_the_order_given_and_leaves_the_undecided_out(
    bus: CountedBus, stack: ScriptedTidegate
) -> None:
    async with Tidegate(tenant("acme"), transport=bus) as tg:
        waiting = [await escalated(tg, f"W-{n}") for n in range(12)]
        denied = await tg.propose("reorder_stock", {"sku": "D-1", "quantity": 5000})
        assert isinstance(denied, Denied)
        await stack.approve(waiting[7].approval_id)
        await stack.reject(waiting[3].approval_id, comment="not this month")
        rows = [(e.action_id, e.position) for e in waiting] + [(denied.action_id, waiting[0].position)]
        before = bus.reads
        answers = await tg.resume_many(rows, timeout_s=0.3)
        assert bus.reads - before == 1  # all of one client's proposals share its start position: one reader
    assert list(answers) == [waiting[3].action_id, waiting[7].action_id, denied.action_id]
    rejected, executed, refused_by_policy = answers.values()
    assert isinstance(rejected, Rejected)
    assert rejected.comment == "not this month"
    assert isinstance(executed, Executed)
    assert executed.result == {"po": "PO-W-7"}
    assert isinstance(refused_by_policy, Denied)
    assert refused_by_policy.codes == ["budget_exceeded"]


async def test_the_read_ends_as_soon_as_every_action_is_settled(bus: CountedBus, stack: ScriptedTidegate) -> None:
    async with Tidegate(tenant("acme"), transport=bus) as tg:
        waiting = [await escalated(tg, f"S-{n}") for n in range(3)]
        for e in waiting:
            await stack.reject(e.approval_id)
        began = time.monotonic()
        answers = await tg.resume_many([(e.action_id, e.position) for e in waiting], timeout_s=60)
    assert [type(a) for a in answers.values()] == [Rejected] * 3
    assert time.monotonic() - began < 10


async def test_an_action_whose_id_another_call_took_is_refused_alone_and_the_others_are_answered(
    bus: CountedBus, stack: ScriptedTidegate
) -> None:
    async with Tidegate(tenant("acme"), transport=bus) as acme:
        own = await escalated(acme, "A-1")
        async with Tidegate(tenant("globex"), transport=bus) as globex:  # globex's call takes the id acme meant to use
            assert isinstance(await globex.propose("reorder_stock", {"sku": "GLX-1", "quantity": 3}, action_id=SHARED), Executed)
        await stack.approve(own.approval_id)
        answers = await acme.resume_many([(SHARED, own.position), (own.action_id, own.position)], timeout_s=5)
    refused, executed = answers[SHARED], answers[own.action_id]
    assert isinstance(refused, ActionIdReused)
    assert refused.by_deployment
    assert isinstance(executed, Executed)
    assert executed.result == {"po": "PO-A-1"}


async def test_each_action_is_answered_only_by_events_from_its_own_position_on(bus: CountedBus, stack: ScriptedTidegate) -> None:
    """One reader from the earliest position would hand a later action what came before its own position."""
    async with Tidegate(tenant("acme"), transport=bus) as acme:
        early = await escalated(acme, "E-1")
        await stack.approve(early.approval_id)
        assert isinstance(await early.decision(timeout_s=5), Executed)  # its whole story is told before `after`
        async with Tidegate(tenant("globex"), transport=bus) as globex:
            assert isinstance(await globex.propose("reorder_stock", {"sku": "GLX-1", "quantity": 3}, action_id=SHARED), Executed)
        after = (await bus.end(ANSWER_TOPICS)).token()
        late = await escalated(acme, "L-1")
        await stack.reject(late.approval_id)

        before = bus.reads
        answers = await acme.resume_many([(SHARED, after), (early.action_id, after), (late.action_id, early.position)], timeout_s=0.5)
        assert bus.reads - before == 2  # one reader per position
        assert list(answers) == [late.action_id]  # globex's decision and early's story came before `after`: neither is read
        assert isinstance(answers[late.action_id], Rejected)

        from_the_start = await acme.resume_many([(SHARED, None), (early.action_id, early.position)], timeout_s=5)
    assert isinstance(from_the_start[SHARED], ActionIdReused)  # from the beginning, globex's decision is there
    assert isinstance(from_the_start[early.action_id], Executed)


async def test_an_action_given_twice_or_a_position_that_is_not_one_is_refused_before_anything_is_read(
    bus: CountedBus, stack: ScriptedTidegate
) -> None:
    async with Tidegate(tenant("acme"), transport=bus) as tg:
        before = bus.reads
        with pytest.raises(ValueError, match="action 'a-1' is given twice"):
            await tg.resume_many([("a-1", None), ("a-1", "actions.decided:3")], timeout_s=1)
        with pytest.raises(ValueError, match="action 'a-2': 'garbage' is not a position token"):
            await tg.resume_many([("a-1", None), ("a-2", "garbage")], timeout_s=1)
        assert bus.reads == before
        assert await tg.resume_many([], timeout_s=1) == {}


class BrokenReads(MemoryTransport):
    """A bus whose new readers of the answer topics fail at once, once `broken` (the broker timed a fetch out)."""

    broken = False

    async def read(
        self, topics: tuple[str, ...], start: Position | None, *, caught_up: asyncio.Event | None = None
    ) -> AsyncIterator[tuple[str, Any]]:
        if self.broken and topics == ANSWER_TOPICS:
            raise TimeoutError("the broker timed out a fetch")
        async for item in super().read(topics, start, caught_up=caught_up):
            yield item


async def test_a_reader_that_fails_is_raised_not_taken_for_the_end_of_the_wait() -> None:
    bus = BrokenReads()
    async with ScriptedTidegate(bus, rule), Tidegate(tenant("acme"), transport=bus) as tg:
        bus.broken = True  # after the client's live reader started
        with pytest.raises(TimeoutError, match="the broker timed out a fetch"):
            await tg.resume_many([("a-1", None)], timeout_s=30)
        with pytest.raises(TimeoutError, match="the broker timed out a fetch"):
            await tg.resume("a-1", timeout_s=30)


def test_the_sync_flavour_resumes_many() -> None:
    bus = MemoryTransport()
    stack = ScriptedTidegate(bus, rule, tools={"reorder_stock": lambda args: {"po": "PO-1"}})
    with SyncTidegate(tenant("acme"), transport=bus) as tg:
        tg.run(stack.__aenter__())
        try:
            outcome = tg.propose("reorder_stock", {"sku": "S-1", "quantity": 300})
            assert isinstance(outcome, Escalated)
            tg.run(stack.reject(outcome.approval_id))
            answers = tg.resume_many([(outcome.action_id, outcome.position)], timeout_s=5)
        finally:
            tg.run(stack.__aexit__(None, None, None))
    assert isinstance(answers[outcome.action_id], Rejected)


class SlowHistory(MemoryTransport):
    """A bus whose readers of the answer topics take `per_event_s` for each event that was there before they began:
    a busy deployment's history, read from an old position. `stall` makes them never read it at all."""

    per_event_s = 0.0
    stall = False

    async def read(
        self, topics: tuple[str, ...], start: Position | None, *, caught_up: asyncio.Event | None = None
    ) -> AsyncIterator[tuple[str, Any]]:
        if topics != ANSWER_TOPICS or not (self.per_event_s or self.stall):
            async for item in super().read(topics, start, caught_up=caught_up):
                yield item
            return
        if self.stall:
            await asyncio.Event().wait()  # connected, never fetching
        history = caught_up or asyncio.Event()
        async for item in super().read(topics, start, caught_up=history):
            if not history.is_set():
                await asyncio.sleep(self.per_event_s)
            yield item


async def test_a_history_longer_to_read_than_the_timeout_is_read_to_its_end_and_the_decision_in_it_found() -> None:
    """The timeout is the wait for answers not given yet; reading what is already there, while it moves on, does not count."""
    bus = SlowHistory()
    async with ScriptedTidegate(bus, rule) as stack, Tidegate(tenant("acme"), transport=bus) as tg:
        waiting = [await escalated(tg, f"H-{n}") for n in range(4)]
        await stack.reject(waiting[-1].approval_id, comment="read to the end")
        history = sum(len(bus.topics[t]) for t in ANSWER_TOPICS)
        bus.per_event_s = 0.02
        began = time.monotonic()
        answers = await tg.resume_many([(e.action_id, e.position) for e in waiting], timeout_s=0.1)
        took = time.monotonic() - began
        rejected = await tg.resume(waiting[-1].action_id, position=waiting[-1].position, timeout_s=0.1)
    assert history * bus.per_event_s > 0.1  # the history alone takes longer than the timeout
    assert list(answers) == [waiting[-1].action_id]
    assert isinstance(answers[waiting[-1].action_id], Rejected)
    assert isinstance(rejected, Rejected)
    assert rejected.comment == "read to the end"
    assert took < 10


async def test_a_read_that_never_moves_ends_the_wait_after_the_timeout() -> None:
    bus = SlowHistory()
    async with ScriptedTidegate(bus, rule), Tidegate(tenant("acme"), transport=bus) as tg:
        waiting = await escalated(tg, "N-1")
        bus.stall = True
        began = time.monotonic()
        assert await tg.resume_many([(waiting.action_id, waiting.position)], timeout_s=0.2) == {}
        with pytest.raises(TimeoutError, match="no conclusive answer"):
            await tg.resume(waiting.action_id, position=waiting.position, timeout_s=0.2)
    assert time.monotonic() - began < 5
