"""What every adapter's offline tests share: scripted governance on a memory bus, clients that restart, side effects.

The adapters' suites (`integrations/tests`, `integrations/autogen_tests`) take these fixtures into
their conftest. They run in the adapters' own venvs (`make integrations-test`), whose frameworks pin
versions the services' venv cannot share; they import only `schemas` and `tidegate.client`, never a service.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from schemas import ActionProposedData
from tidegate.client import ANSWER_TOPICS, ClientSettings, MemoryTransport, Position, SqliteProposals, Tidegate
from tidegate.client.scripted import ScriptedTidegate

TOOLS = ("tag_ticket", "issue_refund", "delete_customer_data")
TASK = "ticket-1007"  # a restarted agent resumes its calls under the task it proposed them for


def rule(p: ActionProposedData) -> tuple[str, str]:
    """The default pack's shape: deletions are human-only, refunds at or over 500 escalate, the rest is allowed."""
    if p.tool == "delete_customer_data":
        return "deny", "human_only"
    if p.tool == "issue_refund" and p.args.get("amount_usd", 0) >= 500:
        return "escalate", "needs_human_approval"
    return "allow", "low_risk_write_allowed"


@pytest.fixture
def bus() -> MemoryTransport:
    return MemoryTransport()


@pytest.fixture
async def governance(bus: MemoryTransport) -> AsyncIterator[ScriptedTidegate]:
    """Policy, approvals and executor, scripted; the agent's own functions are served as governed `topic` tools."""
    async with ScriptedTidegate(bus, rule, topic_tools=TOOLS) as scripted:
        yield scripted


@pytest.fixture
def make_client(bus: MemoryTransport, tmp_path: Path) -> Callable[[], Tidegate]:
    """A new client (a new process, as far as Tidegate can tell) sharing the state dir and task of the test's agent."""

    def make() -> Tidegate:
        settings = ClientSettings(state_dir=tmp_path / "state", decision_timeout_s=5)
        return Tidegate(settings, transport=bus, task_id=TASK, proposals=SqliteProposals(tmp_path / "state" / "proposals.sqlite3"))

    return make


class SideEffects:
    """What the agent's tool functions really did."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def of(self, tool: str) -> list[dict[str, Any]]:
        return [args for name, args in self.calls if name == tool]


@pytest.fixture
def effects() -> SideEffects:
    return SideEffects()


async def wait_pending(governance: ScriptedTidegate) -> str:
    """The approval id of the one pending request (polled for up to 5 s)."""
    for _ in range(500):
        if governance.pending():
            return governance.pending()[0].approval_id
        await asyncio.sleep(0.01)
    raise AssertionError("no approval request")


class ReadsOpened:
    """Counts the readers of the answer topics opened on `bus` from now on (a sweep's one read, or one per row)."""

    def __init__(self, bus: MemoryTransport) -> None:
        self.count = 0
        read = bus.read

        def counted(
            topics: tuple[str, ...], start: Position | None, *, caught_up: asyncio.Event | None = None
        ) -> AsyncIterator[tuple[str, Any]]:
            if topics == ANSWER_TOPICS:
                self.count += 1
            return read(topics, start, caught_up=caught_up)

        bus.read = counted  # type: ignore[method-assign]
