"""A client proposing under its default task for longer than the policy keeps a task moves on to a new one.

The policy keeps a task `TIDEGATE_POLICY_TASK_STATE_KEPT_S` (7 days), then denies every call of it `task_expired`. An
agent process that made one `Tidegate()` for its life (a worker, a desktop agent) proposed every call under its one
default task: from its eighth day on, every call was denied (integrator probe F9).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.unit.client.test_mcp_gateway_task_expiry import Forgetful
from tidegate.client import Denied, Executed, MemoryTransport, Tidegate
from tidegate.client.scripted import ScriptedTidegate


@pytest.fixture
async def bus() -> AsyncIterator[MemoryTransport]:
    bus = MemoryTransport()
    async with ScriptedTidegate(bus, Forgetful(), tools={"tag_ticket": lambda args: {"tagged": True}}):
        yield bus


async def test_the_default_task_forgotten_by_the_policy_is_left_for_a_new_one(bus: MemoryTransport) -> None:
    async with Tidegate(transport=bus) as tg:
        old = tg.task_id
        denied = await tg.propose("tag_ticket", {"ticket_id": "T-1"})
        assert isinstance(denied, Denied)
        assert denied.codes == ["task_expired"]  # that call stays denied: it did not run
        assert tg.task_id != old
        again = await tg.propose("tag_ticket", {"ticket_id": "T-1"})
    assert isinstance(again, Executed), again


async def test_a_task_the_caller_chose_is_not_left_behind_its_back(bus: MemoryTransport) -> None:
    """A stable `Tidegate(task_id=...)` (or `task=`) is the caller's: it runs that work as a new task itself."""
    async with Tidegate(transport=bus, task_id="ticket-1007") as tg:
        first = await tg.propose("tag_ticket", {"ticket_id": "T-1"})
        second = await tg.propose("tag_ticket", {"ticket_id": "T-2"})
        assert tg.task_id == "ticket-1007"
    assert isinstance(first, Denied)
    assert isinstance(second, Denied)
    assert second.codes == ["task_expired"]
