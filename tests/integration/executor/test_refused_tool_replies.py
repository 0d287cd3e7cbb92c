"""A tool service still signing with the key `tidegate keys rotate-tool` retired: the action says so (platform5 finding 4).

Real broker and database: the reply is refused by the executor's bus (`signer_retired`, dead-lettered), and the action
ends `unknown` with `reply_refused`, naming the retired key and what to do, instead of "did not answer in 10.0 s".
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from signers import tool_key

import schemas as s
from servicekit import ADMIN, REPO_ROOT, Bus, KitSettings, SigningKey, kafka_options, sign_event
from servicekit.signing import rotate
from services.executor.app import build
from tests.integration.executor.test_outside_tool_service import spy_on


def inventory_tool() -> dict[str, Any]:
    """The example `update_inventory`, answering within 3 s and called once (the test waits for that timeout)."""
    spec = yaml.safe_load((REPO_ROOT / "catalog" / "tools" / "update_inventory.yaml").read_text())
    return spec | {"tenants": ["*"], "timeout_s": 3, "retry": {"max_attempts": 1}}


async def test_a_reply_signed_by_a_retired_tool_key_ends_the_call_unknown_saying_why(
    kit: KitSettings, make_tools_dir: Any, publisher: Bus, listener: Any, authorize: Any, tenant: str, wait_for: Any, tmp_path: Path
) -> None:
    from aiokafka import AIOKafkaProducer

    current = tool_key(kit, "update_inventory")
    old_key = SigningKey(current.name, current.private)  # what the tool service holds: nobody restarted it after the rotation
    rotate(kit.keys_dir / "tools", "update_inventory", now=datetime.now(UTC) - timedelta(hours=1))  # the grace is long over
    svc = build(kit=kit.model_copy(update={"tools_dir": make_tools_dir(inventory_tool())}), environ={})
    invocations: list[s.ToolInvocation] = []
    spy = spy_on(publisher, [], invocations)
    tool_service = AIOKafkaProducer(bootstrap_servers=publisher.bootstrap, **kafka_options(KitSettings(), ADMIN))
    await svc.start()
    await spy.start()
    await tool_service.start()
    try:
        take = authorize(tenant, "update_inventory", {"sku": "KB-MECH-01", "delta": -3})
        await publisher.publish("actions.authorized", take)
        [invocation] = await wait_for(lambda: invocations, what="the invocation")
        d = invocation.data
        data = s.ToolReplyData(
            action_id=d.action_id, task_id=d.task_id, tenant_id=d.tenant_id, tool=d.tool, attempt=d.attempt, ok=True, result={"on_hand": 37}
        )
        reply = sign_event(s.ToolReply.build(data, source="inventory"), old_key)
        await tool_service.send_and_wait(d.reply_topic, s.encode(reply), key=d.task_id.encode())

        [result] = await wait_for(lambda: listener.for_action(take.data.action_id), timeout=60, what="the result")
        assert listener.dead_codes(take.data.action_id) == ["signer_retired"]
        assert result.type == "tidegate.action.unknown"  # it replied: the stock may have moved, a person checks
        error = result.data.error
        assert (error.type, error.maybe_applied) == ("reply_refused", True)
        assert error.message.startswith(f"update_inventory replied, but its reply was refused: signer_retired: key {old_key.key_id} ")
        assert "restart the tool service with its new key" in error.message
    finally:
        await tool_service.stop()
        await spy.stop()
        await svc.stop()
