"""What the offline examples share: scripted governance on a memory bus, standing in for a running Tidegate."""

from __future__ import annotations

import tempfile
from pathlib import Path

from schemas import ActionProposedData
from tidegate.client import ClientSettings, MemoryTransport, SqliteProposals, Tidegate
from tidegate.client.scripted import LocalTool, ScriptedTidegate


def rule(p: ActionProposedData) -> tuple[str, str]:
    """Refunds of 500 USD or more need a human; the rest is allowed."""
    if p.tool in ("issue_refund", "refund_customer") and p.args.get("amount_usd", 0) >= 500:
        return "escalate", "needs_human_approval"
    return "allow", "low_risk_write_allowed"


def offline(tools: tuple[str, ...], catalog: dict[str, LocalTool] | None = None) -> tuple[MemoryTransport, ScriptedTidegate, Tidegate]:
    """A memory bus, scripted policy/approval/executor, and a client on it (swap for `Tidegate()` against the real thing).

    `tools` are the agent's functions, served by this process; `catalog` tools the (scripted) executor runs itself.
    """
    bus = MemoryTransport()
    state = Path(tempfile.mkdtemp(prefix="tidegate-example-"))
    # A task per conversation, kept when it is resumed (in another process too): the adapters that name calls by it need it.
    client = Tidegate(
        ClientSettings(state_dir=state), transport=bus, task_id="ticket-1007", proposals=SqliteProposals(state / "proposals.sqlite3")
    )
    return bus, ScriptedTidegate(bus, rule, tools=catalog, topic_tools=tools), client
