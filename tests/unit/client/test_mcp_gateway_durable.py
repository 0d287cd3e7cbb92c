"""The MCP gateway across a restart and a broker outage, driven by the `mcp` package's own client over a memory bus.

A restarted gateway still knows what it proposed (kept in the client's state dir), so a poll without a
position answers; a bus it cannot reach is a tool error naming the action id to retry under, not an internal error.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import mcp
import pytest
from aiokafka.errors import KafkaConnectionError

from schemas import Envelope
from tests.unit.client.test_mcp_gateway import CATALOG, approve_when_pending, rule, text_of
from tidegate.client import ClientSettings, MemoryTransport
from tidegate.client.scripted import ScriptedTidegate
from tidegate.client.transport import Position
from tidegate.mcp_gateway import STATUS_TOOL, GatewaySettings
from tidegate.mcp_gateway.run import gateway, state_file
from tidegate.mcp_gateway.server import IDEMPOTENCY_META
from tidegate.mcp_gateway.tasks import SqliteActionTasks

TOOLS = {"issue_refund": lambda args: {"refunded": args["amount_usd"]}, "tag_ticket": lambda args: {"tagged": True}}


class FlakyBus(MemoryTransport):
    """A memory bus whose broker can go away: sends and new readers then fail as aiokafka's do."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def publish(self, topic: str, event: Envelope) -> None:
        if self.down:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 19092, <AddressFamily.AF_INET: 2>)]")
        await super().publish(topic, event)

    async def read(
        self, topics: tuple[str, ...], start: Position | None, *, caught_up: asyncio.Event | None = None
    ) -> AsyncIterator[tuple[str, Any]]:
        if self.down:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 19092, <AddressFamily.AF_INET: 2>)]")
        async for item in super().read(topics, start, caught_up=caught_up):
            yield item


@pytest.fixture
def settings(tmp_path: Path) -> ClientSettings:
    return ClientSettings(state_dir=tmp_path / "state", decision_timeout_s=5)


async def test_a_restarted_gateway_answers_a_poll_without_a_position_for_what_it_proposed(settings: ClientSettings) -> None:
    bus = MemoryTransport()
    pending_mode = GatewaySettings(on_escalation="pending")
    async with ScriptedTidegate(bus, rule, tools=TOOLS) as scripted:
        async with gateway(pending_mode, settings, CATALOG, transport=bus) as server, mcp.Client(server) as agent:
            pending = await agent.call_tool("issue_refund", {"amount_usd": 90.0})
        assert pending.structured_content["outcome"] == "pending"
        ask = {"action_id": pending.structured_content["action_id"]}  # the model kept the id, not the position
        assert state_file(settings).exists()

        # The gateway restarts (a new process: a new client, whose answers start after the escalation).
        async with gateway(pending_mode, settings, CATALOG, transport=bus) as server, mcp.Client(server) as agent:
            still = await agent.call_tool(STATUS_TOOL, ask)
            assert (still.is_error, still.structured_content["outcome"]) == (False, "pending")
            assert still.structured_content["position"] == pending.structured_content["position"]
            await approve_when_pending(scripted)
            done = await agent.call_tool(STATUS_TOOL, ask)
            retried = await agent.call_tool("issue_refund", {"amount_usd": 90.0}, meta={IDEMPOTENCY_META: ask["action_id"]})
    assert (done.is_error, done.structured_content) == (False, {"refunded": 90.0})
    assert (retried.is_error, retried.structured_content) == (False, {"refunded": 90.0})  # followed, not proposed again
    assert len(scripted.proposals) == 1
    assert scripted.calls == {"issue_refund": [{"amount_usd": 90.0}]}


async def test_a_bus_down_during_a_call_is_a_tool_error_with_the_action_id_to_retry_under(settings: ClientSettings) -> None:
    bus = FlakyBus()
    async with (
        ScriptedTidegate(bus, rule, tools=TOOLS) as scripted,
        gateway(GatewaySettings(), settings, CATALOG, transport=bus) as server,
        mcp.Client(server) as agent,
    ):
        bus.down = True
        failed = await agent.call_tool("tag_ticket", {"ticket_id": "T-1"})
        assert failed.is_error
        action_id = failed.structured_content["action_id"]
        assert failed.structured_content == {"outcome": "unreachable", "action_id": action_id}
        said = text_of(failed)  # what a model reads
        assert said.startswith("the governance bus is unreachable (KafkaConnectionError: Unable to bootstrap")
        assert action_id in said
        assert IDEMPOTENCY_META in said

        polled = await agent.call_tool(STATUS_TOOL, {"action_id": action_id})
        assert (polled.is_error, polled.structured_content) == (True, {"outcome": "unreachable", "action_id": action_id})
        assert "cannot tell where action" in text_of(polled)

        bus.down = False
        unsent = await agent.call_tool(STATUS_TOOL, {"action_id": action_id})
        assert (unsent.is_error, unsent.structured_content["outcome"]) == (True, "not_sent")
        assert scripted.proposals == []
        retried = await agent.call_tool("tag_ticket", {"ticket_id": "T-1"}, meta={IDEMPOTENCY_META: action_id})
    assert (retried.is_error, retried.structured_content) == (False, {"tagged": True})
    assert [p.action_id for p in scripted.proposals] == [action_id]
    assert scripted.calls == {"tag_ticket": [{"ticket_id": "T-1"}]}


async def test_a_call_cut_off_by_a_gateway_restart_is_followed_when_made_again_not_proposed_twice(settings: ClientSettings) -> None:
    """`wait` mode: the gateway stops while a human decides; the same call made again (no action id) is the first one."""
    bus = MemoryTransport()
    waiting = GatewaySettings(progress_every_s=0.05)
    progress: list[str] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async def first_gateway() -> None:
        async with gateway(waiting, settings, CATALOG, transport=bus) as server, mcp.Client(server) as agent:
            await agent.call_tool("issue_refund", {"amount_usd": 90.0}, progress_callback=on_progress)

    async with ScriptedTidegate(bus, rule, tools=TOOLS) as scripted:
        cut_off = asyncio.create_task(first_gateway())
        while not progress:
            await asyncio.sleep(0.01)
        cut_off.cancel()  # the process goes away while the call waits
        with contextlib.suppress(asyncio.CancelledError):
            await cut_off
        [first] = scripted.proposals
        assert first.action_id in progress[0]

        async with gateway(waiting, settings, CATALOG, transport=bus) as server, mcp.Client(server) as agent:
            progress.clear()
            again = asyncio.create_task(agent.call_tool("issue_refund", {"amount_usd": 90.0}, progress_callback=on_progress))
            while not progress:  # the model called again, without the id: it waits on the first proposal
                await asyncio.sleep(0.01)
            assert [p.action_id for p in scripted.proposals] == [first.action_id]
            await approve_when_pending(scripted)
            # Answered, it is not followed any more: the same call made once more is a call of its own.
            progress.clear()
            another = asyncio.create_task(agent.call_tool("issue_refund", {"amount_usd": 90.0}, progress_callback=on_progress))
            while not progress:
                await asyncio.sleep(0.01)
            await approve_when_pending(scripted)
            answers = [await again, await another]
    assert [(a.is_error, a.structured_content) for a in answers] == [(False, {"refunded": 90.0})] * 2
    assert len({p.action_id for p in scripted.proposals}) == 2
    assert len(scripted.calls["issue_refund"]) == 2


HOLDER = """
import sys
from pathlib import Path
from tidegate.mcp_gateway.tasks import SqliteActionTasks
tasks = SqliteActionTasks(Path(sys.argv[1]))
tasks.bind("mcp-held", "task-1")
tasks.hold("mcp-held", "the-call")
print("held", flush=True)
sys.stdin.read()
"""


def test_a_call_held_by_a_running_gateway_is_never_taken_over_and_one_whose_gateway_died_is(tmp_path: Path) -> None:
    path = tmp_path / "mcp-gateway.tidegate.sqlite3"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        tasks = SqliteActionTasks(path)
        assert tasks.orphan("the-call") is None  # another gateway, alive, still waits on it
        holder.kill()  # SIGKILL: nothing of the process runs any more, its lock is released by the kernel
        holder.wait()
        assert tasks.orphan("the-call") == "mcp-held"
        assert tasks.bind("mcp-held", "task-2") == "task-1"  # followed under the task it was proposed in
        assert tasks.orphan("the-call") is None  # taken: the next one is a call of its own
        tasks.close()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
