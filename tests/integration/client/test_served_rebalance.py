"""A second process that starts serving a tool while the first runs its calls runs none of them again (the real broker).

Both processes share the tool's consumer group: the second's join moves partitions away from the first while their
requests still run there. Before, the second read them again from the last commit and ran them too (two processes'
ledgers cannot tell), so a refund was paid twice whenever an agent's second replica started or a restarted one rejoined.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from conftest import Stack

from tidegate.client import ClientSettings, Executed, ServedCall, Tidegate, governed

CALLS = 6
RUN_S = 6.0  # each call runs this long: longer than the second process takes to join (reorder_stock's timeout is 10 s)


async def test_a_process_joining_the_tools_group_while_calls_run_runs_none_of_them_again(
    stack: Stack, client_settings: ClientSettings
) -> None:
    ran: list[tuple[str, str]] = []  # (process, action id), as each call starts
    started = asyncio.Event()

    def serving(tg: Tidegate, process: str) -> None:
        @governed("reorder_stock", client=tg)
        async def reorder_stock(sku: str, quantity: int, tidegate_call: ServedCall | None = None) -> str:
            assert tidegate_call is not None
            ran.append((process, tidegate_call.action_id))
            started.set()
            await asyncio.sleep(RUN_S)
            return f"PO-{sku}"

    state = client_settings.state_dir
    settings = {name: client_settings.model_copy(update={"state_dir": state / name}) for name in ("first", "second", "agent")}
    async with Tidegate(settings["first"]) as first, Tidegate(settings["agent"]) as agent:
        serving(first, "first")
        run = uuid.uuid4().hex[:6]
        proposals = [
            asyncio.create_task(agent.propose("reorder_stock", {"sku": f"KB-{i}", "quantity": 1}, task=f"t-{run}-{i}", timeout_s=90))
            for i in range(CALLS)
        ]
        await asyncio.wait_for(started.wait(), 60)
        async with Tidegate(settings["second"]) as second:  # another replica of the agent starts while the calls run
            serving(second, "second")
            outcomes: list[Any] = await asyncio.wait_for(asyncio.gather(*proposals), 120)
    assert all(isinstance(o, Executed) for o in outcomes), outcomes
    actions = [action for _, action in ran]
    assert sorted(actions) == sorted(o.action_id for o in outcomes), ran  # each call ran once, in one of the two processes
