"""A gateway up longer than the policy keeps a task: its own task is forgotten, and it moves to a new one.

The policy keeps a task's working state `TIDEGATE_POLICY_TASK_STATE_KEPT_S` (7 days) and denies every later call of it
`task_expired` ("run the work as a new task"). The gateway proposes the calls of clients that name no session (the
`mcp` SDK's default) and of its stdio connection under its own task, for its whole life: a gateway up for a week
answered every call `task_expired`, which no model can act on (integrator probe F9).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import mcp
import pytest

from schemas import ActionProposedData
from tests.unit.client.test_mcp_gateway import CATALOG, rule
from tidegate.client import MemoryTransport, Tidegate
from tidegate.client.scripted import ScriptedTidegate
from tidegate.mcp_gateway import GatewaySettings, build_server
from tidegate.mcp_gateway.answers import IDEMPOTENCY_META


class Forgetful:
    """The policy, once the gateway's first task is a week old: every call of it is denied `task_expired`."""

    def __init__(self) -> None:
        self.forgotten: str | None = None

    def __call__(self, p: ActionProposedData) -> tuple[str, str]:
        self.forgotten = self.forgotten or p.task_id
        return ("deny", "task_expired") if p.task_id == self.forgotten else rule(p)


@pytest.fixture
async def stack() -> AsyncIterator[tuple[ScriptedTidegate, Tidegate]]:
    bus = MemoryTransport()
    tools = {"tag_ticket": lambda args: {"tagged": True}}
    async with ScriptedTidegate(bus, Forgetful(), tools=tools) as scripted, Tidegate(transport=bus) as client:
        yield scripted, client


async def test_a_call_denied_task_expired_in_the_gateways_own_task_is_made_again_in_a_new_one(
    stack: tuple[ScriptedTidegate, Tidegate],
) -> None:
    scripted, client = stack
    first_task = client.task_id
    async with mcp.Client(build_server(client, CATALOG, GatewaySettings())) as mcp_client:
        result = await mcp_client.call_tool("tag_ticket", {"ticket_id": "T-1"})
        later = await mcp_client.call_tool("tag_ticket", {"ticket_id": "T-2"})
    assert (result.is_error, result.structured_content) == (False, {"tagged": True})
    assert (later.is_error, later.structured_content) == (False, {"tagged": True})
    assert [p.task_id == first_task for p in scripted.proposals] == [True, False, False]
    assert len({p.task_id for p in scripted.proposals[1:]}) == 1  # one new task, kept
    assert len({p.action_id for p in scripted.proposals}) == 3
    assert scripted.calls == {"tag_ticket": [{"ticket_id": "T-1"}, {"ticket_id": "T-2"}]}


async def test_a_call_whose_caller_chose_its_action_id_is_answered_task_expired_and_not_made_again(
    stack: tuple[ScriptedTidegate, Tidegate],
) -> None:
    """Its id names that call: another proposal under it would be another call's (the caller retries under a new id)."""
    scripted, client = stack
    async with mcp.Client(build_server(client, CATALOG, GatewaySettings())) as mcp_client:
        result = await mcp_client.call_tool("tag_ticket", {"ticket_id": "T-1"}, meta={IDEMPOTENCY_META: "mine-1"})
        again = await mcp_client.call_tool("tag_ticket", {"ticket_id": "T-1"}, meta={IDEMPOTENCY_META: "mine-2"})
    assert result.is_error
    assert result.structured_content == {"action_id": "mine-1", "outcome": "denied", "reasons": ["task_expired"]}
    assert (again.is_error, again.structured_content) == (False, {"tagged": True})  # the gateway had moved on
    assert scripted.calls == {"tag_ticket": [{"ticket_id": "T-1"}]}
