"""Acting as an attacker who can write a governed tool's request topic (a stolen login, an ACL mistake): nothing runs.

The attacker uses a plain Kafka client. It has read the genuine authorizations on `actions.authorized`
and, in the worst case here, stolen the executor's signing key; it has not the policy's key. A governed
function runs only on an invocation that carries the policy's signed authorization of exactly that call.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bus_helpers import Collector, Producer
from conftest import Stack

from schemas import ActionAuthorizedData, ToolInvocation, ToolInvocationData, action_digest, authorization_message, encode
from servicekit import SigningKey, sign_event
from tidegate.client import ClientSettings, Tidegate, governed


def forged(task_id: str, args: dict[str, Any], authorized: ActionAuthorizedData | None, prefix: str) -> ToolInvocation:
    action_id = f"forged-{uuid.uuid4().hex[:8]}"
    data = ToolInvocationData(
        action_id=action_id, task_id=task_id, tenant_id="acme", tool="reorder_stock", args=args, idempotency_key=action_id,
        deadline=datetime.now(UTC) + timedelta(seconds=30), reply_topic=f"{prefix}tools.reorder_stock.replies", authorized=authorized,
    )  # fmt: skip
    return ToolInvocation.build(data, source="tidegate/executor")


async def test_forged_invocations_on_the_tool_topic_run_nothing(
    stack: Stack, client_settings: ClientSettings, tmp_path: Path, wait_for: Any
) -> None:
    kit = stack.kit
    ran: list[dict[str, Any]] = []
    authorizations = Collector(kit, ["actions.authorized"])
    await authorizations.start()
    attacker = Producer(kit)
    await attacker.start()
    try:
        async with Tidegate(client_settings) as tg:

            @governed("reorder_stock", client=tg)
            async def reorder_stock(sku: str, quantity: int) -> dict[str, Any]:
                ran.append({"sku": sku, "quantity": quantity})
                return {"po": f"PO-{sku}-{quantity}"}

            assert await reorder_stock("KB-1", 3) == {"po": "PO-KB-1-3"}
            [genuine] = await wait_for(lambda: authorizations.events["actions.authorized"], what="the genuine authorization")
            stolen_executor = SigningKey.load_or_create(kit.keys_dir, "executor")
            rogue_policy = SigningKey.load_or_create(tmp_path / "rogue", "policy")
            big = {"sku": "KB-1", "quantity": 9000}
            counterfeit = genuine.data.model_copy(update={"args": big})  # the genuine signature, other args
            rogue = genuine.data.model_copy(update={"args": big})
            auth = rogue.authorization.model_copy(
                update={"action_digest": action_digest("acme", "reorder_stock", big), "key_id": rogue_policy.key_id}
            )
            rogue = rogue.model_copy(update={"authorization": auth})
            rogue = rogue.model_copy(
                update={"authorization": auth.model_copy(update={"signature": rogue_policy.sign(authorization_message(rogue))})}
            )
            attempts = [
                forged(tg.task_id, big, genuine.data, kit.topic_prefix),  # unsigned, carrying another call's authorization
                sign_event(forged(tg.task_id, big, counterfeit, kit.topic_prefix), stolen_executor),  # the authorization altered
                sign_event(forged(tg.task_id, big, rogue, kit.topic_prefix), stolen_executor),  # authorized by a key not the policy's
                sign_event(forged(tg.task_id, big, None, kit.topic_prefix), stolen_executor),  # no authorization at all
            ]
            for attempt in attempts:  # keyed on the client's task, like its genuine calls: one partition, read in order
                await attacker.send_raw("tools.reorder_stock.requests", encode(attempt), key=attempt.key)
            assert await reorder_stock("KB-2", 1) == {"po": "PO-KB-2-1"}  # served after every forgery was read
    finally:
        await attacker.stop()
        await authorizations.stop()
    assert ran == [{"sku": "KB-1", "quantity": 3}, {"sku": "KB-2", "quantity": 1}]
