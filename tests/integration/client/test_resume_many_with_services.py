"""`resume_many` on the real broker and services: one reader per position, each action read from its own position on.

The answer topics have several partitions here, so a position is offsets by partition, as in production.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from conftest import Stack

from tidegate.client import ANSWER_TOPICS, ClientSettings, Escalated, KafkaTransport, Position, Rejected, Tidegate


class CountedKafka(KafkaTransport):
    """The real transport, counting the readers of the answer topics it opens."""

    reads = 0

    def read(
        self, topics: tuple[str, ...], start: Position | None, *, caught_up: asyncio.Event | None = None
    ) -> AsyncIterator[tuple[str, Any]]:
        if topics == ANSWER_TOPICS:
            self.reads += 1
        return super().read(topics, start, caught_up=caught_up)


async def test_resume_many_reads_once_per_position_and_never_before_an_actions_own(stack: Stack, client_settings: ClientSettings) -> None:
    async with Tidegate(client_settings) as first:
        calls = [
            await first.propose("pay_vendor", {"payee_id": "cus_1003", "amount_usd": 700.0 + n, "invoice_id": f"INV-{n}"}) for n in range(3)
        ]
    assert all(isinstance(call, Escalated) for call in calls), calls
    rejected, earlier, waiting = (call for call in calls if isinstance(call, Escalated))
    token = await stack.approver_token("bob@acme.example", ["finance"])
    for call in (rejected, earlier):
        await stack.decide(call.approval_id, "reject", token, comment=f"not {call.action_id}")

    transport = CountedKafka(client_settings)
    async with Tidegate(client_settings, transport=transport) as second:
        told = await second.resume_many([(rejected.action_id, rejected.position), (earlier.action_id, earlier.position)], timeout_s=60)
        assert [type(outcome) for outcome in told.values()] == [Rejected, Rejected]  # it ended once both were settled
        after = (await transport.end(ANSWER_TOPICS)).token()  # past both stories, in every partition

        reads = transport.reads
        rows = [(rejected.action_id, rejected.position), (earlier.action_id, after), (waiting.action_id, waiting.position)]
        answers = await second.resume_many(rows, timeout_s=3)
        assert transport.reads - reads == 2  # one reader per position, not one per action
    assert list(answers) == [rejected.action_id]  # `earlier`'s story is before its position; `waiting` is undecided
    outcome = answers[rejected.action_id]
    assert isinstance(outcome, Rejected)
    assert outcome.comment == f"not {rejected.action_id}"


async def test_the_kafka_reader_says_when_it_has_read_everything_that_was_there_as_it_began(
    stack: Stack, client_settings: ClientSettings
) -> None:
    """`resume`'s timeout counts from this moment on: set too early, an answer in the history would be missed."""
    async with Tidegate(client_settings) as tg:
        for n in range(3):
            bill = {"payee_id": "cus_1003", "amount_usd": 800.0 + n, "invoice_id": f"H-{n}"}
            assert isinstance(await tg.propose("pay_vendor", bill), Escalated)
    transport = KafkaTransport(client_settings)
    await transport.start()
    try:
        end = await transport.end(ANSWER_TOPICS)
        there = sum(end.offsets.values())  # this test's own topics: every record from offset 0 is a valid event
        assert there >= 6  # three decisions and three requests for a human, at least

        async def count_until(start: Position | None, caught_up: asyncio.Event, seen: list[bool]) -> None:
            async for _ in transport.read(ANSWER_TOPICS, start, caught_up=caught_up):
                seen.append(caught_up.is_set())  # whether it was said to be caught up before this event came

        for start, expected in ((None, there), (end, 0)):
            caught_up, seen = asyncio.Event(), list[bool]()
            reader = asyncio.create_task(count_until(start, caught_up, seen))
            try:
                await asyncio.wait_for(caught_up.wait(), 30)
                assert (len(seen), any(seen)) == (expected, False)  # said once the history was read, not before
            finally:
                reader.cancel()
    finally:
        await transport.stop()
