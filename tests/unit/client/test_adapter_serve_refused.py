"""An adapter's `serve=` (LangGraph's `TidegateMiddleware(client, serve=tools)`, and every other adapter's) whose serve loop
the bus refuses: the agent's next call of that tool raises `NotServed` before anything is proposed.

`@governed` functions had this gate; the adapters' `serve=` went through `serve_function`, which started the serve loop in
the background and let the agent propose anyway: an integrator whose serve loop could not log in as `tool-<tool>` (the
integrator3 probe: the login looked for in site-packages) saw the NotServed traceback in the log while the agent's
900 USD refund was escalated to a person, who was asked to approve a call no process would ever run (it then ends
`unknown`, a follow-up for a human, though it never ran).
"""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path
from typing import Any

import pytest

from schemas import ActionProposedData
from tests.unit.client.test_governed import RefusingBus  # the `agent` login: no tool topic may be read
from tidegate.client import ClientSettings, Tidegate
from tidegate.client.governed import NotServed
from tidegate.client.scripted import ScriptedTidegate
from tidegate.integrations._common import serve_function


def escalate(p: ActionProposedData) -> tuple[str, str]:
    return ("escalate", "needs_human_approval")


async def test_an_adapters_tool_the_bus_will_not_let_this_process_serve_is_never_proposed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.import_module("tidegate.client.governed"), "CREDENTIALS_DIR", tmp_path)  # no tool login here
    for name in ("TIDEGATE_KAFKA_CREDENTIALS_DIR", "TIDEGATE_INFRA_DIR"):
        monkeypatch.delenv(name, raising=False)
    bus = RefusingBus()
    ran: list[dict[str, Any]] = []

    async def refund_charge(args: dict[str, Any]) -> str:
        ran.append(args)
        return "refunded"

    async with ScriptedTidegate(bus, escalate, topic_tools=("refund_charge",)) as deployment:
        tg = Tidegate(ClientSettings(sasl_username="agent", state_dir=tmp_path), transport=bus)
        await tg.start()
        serve_function(tg, "refund_charge", refund_charge)  # what TidegateMiddleware(client, serve=[refund_charge]) does
        args = {"charge_id": "ch_1", "customer_id": "cus_1001", "amount_usd": 900.0}
        with pytest.raises(NotServed, match=r"SASL user 'agent' may not read tidegate.tools.refund_charge.requests"):
            await asyncio.wait_for(tg.propose("refund_charge", args, action_id="langgraph:t-1:call_1"), 5)
        with pytest.raises(NotServed):  # and every later call, not a hang
            await asyncio.wait_for(tg.propose("refund_charge", args, action_id="langgraph:t-1:call_2"), 5)
        await tg.stop()
        assert deployment.proposals == []  # no person is asked to approve a call nobody serves
    assert ran == []
