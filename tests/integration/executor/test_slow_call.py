"""One slow tool call holds up no other task's call (integrator5 finding 1): the executor polls on while a call is in flight.

Before, the next batch of authorizations was polled only once the whole batch was handled: one hung call (its timeout ×
its attempts) held every other tenant's and task's call behind it; four quick reads of another tool each took 27.6 s.
"""

from __future__ import annotations

import asyncio
from typing import Any

from servicekit import Bus, KitSettings
from services.executor.app import build


def http_tool(name: str, url: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"{name}, served by a local stub.",
        "risk": "read",
        "untrusted_output": False,
        "kind": "http",
        "url": url,
        "timeout_s": 120.0,  # the slow call ends when the test releases it, never by its timeout
        "retry": {"max_attempts": 1},
        "args_schema": {"type": "object"},
    }


async def test_a_quick_call_of_another_task_ends_while_a_slow_call_is_in_flight(
    kit: KitSettings, http_stub: Any, make_tools_dir: Any, publisher: Bus, listener: Any, authorize: Any, tenant: str, wait_for: Any
) -> None:
    release = asyncio.Event()

    async def answer(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if request["path"] == "/slow":
            await release.wait()  # a payments API that does not answer
        return 200, {"ok": request["path"]}

    stub = await http_stub(answer)
    tools = make_tools_dir(http_tool("slow_lookup", f"{stub.url}/slow"), http_tool("quick_lookup", f"{stub.url}/quick"))
    svc = build(kit=kit.model_copy(update={"tools_dir": tools}), environ={})
    await svc.start()
    try:
        slow = authorize(tenant, "slow_lookup", {"order_id": "O-1"})
        await publisher.publish("actions.authorized", slow)
        await wait_for(lambda: any(r["path"] == "/slow" for r in stub.requests), what="the slow call in flight")

        quick = [authorize(tenant, "quick_lookup", {"order_id": f"O-{n}"}) for n in range(2, 6)]  # four other tasks
        for event in quick:
            await publisher.publish("actions.authorized", event)
        for event in quick:
            [result] = await wait_for(lambda e=event: listener.for_action(e.data.action_id), timeout=60, what="a quick call's result")
            assert result.type == "tidegate.action.succeeded"
        assert listener.for_action(slow.data.action_id) == []  # still in flight: the quick ones did not wait for it

        release.set()
        [result] = await wait_for(lambda: listener.for_action(slow.data.action_id), timeout=60, what="the slow call's result")
        assert result.type == "tidegate.action.succeeded"
    finally:
        release.set()
        await svc.stop()
