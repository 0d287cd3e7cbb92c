"""An agent's refused proposal in a batch is an expected refusal, not a fault: no ERROR line and no traceback for it.

The reviewer's F4: an agent proposing one action id twice with other args made the policy log `ERROR servicekit.consume:
policy: batch of 2 from actions.proposed failed; handling it one event at a time` with a full traceback ending in the
`Reject`, before the WARNING that dead-letters it. Any agent could raise ERROR lines, which alerting counts, at will.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from fake_producer import FakeRecord

import schemas as s
from servicekit import Bus, Producer, Reject
from servicekit.consume import _handle_batch


class Broker(Producer):
    """Takes every record; keeps the dead letters."""

    def __init__(self) -> None:
        super().__init__("unused:1", "policy")
        self.dead_letters: list[s.EventRejected] = []

    async def send(self, topic: str, value: bytes, *, key: bytes | None, headers: list[tuple[str, bytes]]) -> asyncio.Future[Any]:
        if topic == "p.deadletter":
            self.dead_letters.append(s.decode("deadletter", value))
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        delivery.set_result(None)
        return delivery


def proposal(tag: str) -> s.ActionProposed:
    data = s.ActionProposedData(
        action_id="act-1", task_id="t-1", tenant_id="acme", step=1, tool="tag_ticket", args={"ticket_id": "T-1", "tags": [tag]},
        proposer="agent",
    )  # fmt: skip
    return s.ActionProposed.build(data, source="agent")


async def test_an_agents_reused_action_id_in_a_batch_is_dead_lettered_without_an_error_line(caplog: pytest.LogCaptureFixture) -> None:
    broker = Broker()
    bus = Bus(broker, "policy", "unused:1", "p.")
    batch = [FakeRecord("p.actions.proposed", s.encode(proposal(tag)), offset=n) for n, tag in enumerate(("a", "b"))]
    seen: set[str] = set()

    async def handle_one(event: s.ActionProposed) -> None:
        digest = repr(event.data.args)
        if seen and digest not in seen:
            raise Reject(s.ReasonCode.ACTION_ID_REUSED, f"action id {event.data.action_id} was already proposed for another call")
        seen.add(digest)

    async def handle_batch(events: list[s.ActionProposed]) -> None:
        for event in events:  # as the policy's batch does: decides what it can, then raises the refusal to go one at a time
            await handle_one(event)

    with caplog.at_level(logging.INFO):
        async with bus.acknowledged_at_end():
            await _handle_batch(bus, "actions.proposed", batch, handle_batch, handle_one)  # type: ignore[arg-type]

    [dead] = broker.dead_letters
    assert (dead.data.offset, dead.data.code) == (1, "action_id_reused")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert not [r for r in caplog.records if r.exc_info]
    fell_back = [r for r in caplog.records if r.name == "servicekit.consume"]
    assert len(fell_back) == 1
    assert "action_id_reused" in fell_back[0].getMessage()
    assert "one event at a time" in fell_back[0].getMessage()
