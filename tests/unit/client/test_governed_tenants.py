"""The serve loop runs a governed function only for its own client's tenant, and answers another tenant's call with an error.

Defence in depth behind the policy's `tool_not_granted`: a catalog entry that grants the tool to a second tenant (or an
older policy) must not make one tenant's function run for another. The refusal is an answer, never silence, so the
executor records the action failed with the reason instead of waiting out its timeout.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas import ActionAuthorizedData, Authorization, ToolInvocation, ToolInvocationData, action_digest, authorization_message
from tidegate.client import ClientSettings, MemoryLedger, MemoryTransport, Tidegate, serve_tool
from tidegate.client.trust import DeploymentKeys

ARGS = {"sku": "KB-1", "quantity": 3}


@pytest.fixture
def bus() -> MemoryTransport:
    return MemoryTransport()


@pytest.fixture
def keys(bus: MemoryTransport) -> DeploymentKeys:
    made = DeploymentKeys()
    bus.trust = made.trust()
    return made


def invocation(keys: DeploymentKeys, action_id: str, tenant: str) -> ToolInvocation:
    """A genuine invocation of `reorder_stock` for `tenant`: signed by the executor, authorized by the policy."""
    now = datetime.now(UTC)
    auth = Authorization(via="policy", policy_version="v1", action_digest=action_digest(tenant, "reorder_stock", ARGS), issued_at=now,
                         expires_at=now + timedelta(minutes=5), key_id=keys.key_id("policy"), signature="")  # fmt: skip
    authorized = ActionAuthorizedData(
        action_id=action_id, task_id="t-1", tenant_id=tenant, tool="reorder_stock", args=ARGS, authorization=auth
    )
    authorized = authorized.model_copy(
        update={"authorization": auth.model_copy(update={"signature": keys.sign("policy", authorization_message(authorized))})}
    )
    data = ToolInvocationData(
        action_id=action_id, task_id="t-1", tenant_id=tenant, tool="reorder_stock", args=ARGS, idempotency_key=action_id,
        deadline=now + timedelta(seconds=30), reply_topic="tidegate.tools.reorder_stock.replies", authorized=authorized,
    )  # fmt: skip
    return keys.sign_event("executor", ToolInvocation.build(data, source="tidegate/executor"))


async def test_another_tenants_genuine_call_is_answered_tenant_not_served_and_never_runs(
    bus: MemoryTransport, keys: DeploymentKeys, wait_for: Any
) -> None:
    ran: list[dict[str, Any]] = []

    async def run(args: dict[str, Any]) -> dict[str, Any]:
        ran.append(args)
        return {"po": "PO-ACME"}

    async with Tidegate(ClientSettings(tenant="acme"), transport=bus) as acme:
        acme.run_in_background(serve_tool(acme, "reorder_stock", run, MemoryLedger()))
        await bus.publish("tools.reorder_stock.requests", invocation(keys, "a-initech", "initech"))
        await bus.publish("tools.reorder_stock.requests", invocation(keys, "a-acme", "acme"))
        replies = await wait_for(lambda: len(bus.topics["tools.reorder_stock.replies"]) == 2 and bus.topics["tools.reorder_stock.replies"])
    refused, served = (r.data for r in replies)
    assert (refused.action_id, refused.tenant_id, refused.ok) == ("a-initech", "initech", False)
    assert refused.error is not None
    assert (refused.error.type, refused.error.retryable) == ("tenant_not_served", False)
    assert refused.error.message == "the process serving reorder_stock does not serve tenant initech: nothing ran"
    assert "acme" not in str(refused).lower()  # initech learns neither acme's result nor that acme serves the tool
    assert (served.action_id, served.ok, served.result) == ("a-acme", True, {"po": "PO-ACME"})
    assert ran == [ARGS]  # acme's call only


@pytest.mark.parametrize(("served", "runs", "refused"), [(["acme", "initech"], "initech", "globex"), (["*"], "globex", None)])
async def test_a_process_told_which_tenants_it_serves_runs_their_calls(
    keys: DeploymentKeys, wait_for: Any, served: list[str], runs: str, refused: str | None
) -> None:
    bus = MemoryTransport()
    bus.trust = keys.trust()
    ran: list[str] = []

    async def run(args: dict[str, Any]) -> dict[str, Any]:
        ran.append("ran")
        return {}

    callers = [runs] if refused is None else [runs, refused]
    async with Tidegate(ClientSettings(tenant="acme"), transport=bus) as tg:
        tg.run_in_background(serve_tool(tg, "reorder_stock", run, MemoryLedger(), tenants=served))
        for caller in callers:
            await bus.publish("tools.reorder_stock.requests", invocation(keys, f"a-{caller}", caller))
        replies = await wait_for(
            lambda: len(bus.topics["tools.reorder_stock.replies"]) == len(callers) and bus.topics["tools.reorder_stock.replies"]
        )
    assert [(r.data.tenant_id, r.data.ok) for r in replies] == [(c, c == runs) for c in callers]
    assert ran == ["ran"]


@pytest.mark.parametrize(
    ("served", "said"), [(None, "for tenant acme"), (["initech", "acme"], "for tenant acme, initech"), (["*"], "for every tenant")]
)
async def test_the_serve_loop_says_at_start_which_tenants_it_serves(
    bus: MemoryTransport, keys: DeploymentKeys, caplog: pytest.LogCaptureFixture, wait_for: Any, served: list[str] | None, said: str
) -> None:
    async def run(args: dict[str, Any]) -> dict[str, Any]:
        return {}

    caplog.set_level("INFO", logger="tidegate.client.governed")
    async with Tidegate(ClientSettings(tenant="acme"), transport=bus) as tg:
        tg.run_in_background(serve_tool(tg, "reorder_stock", run, MemoryLedger(), tenants=served))
        line = await wait_for(lambda: next((r.getMessage() for r in caplog.records if r.getMessage().startswith("serving ")), None))
    assert "serving reorder_stock as " in line
    assert line.endswith(f"{said} (another tenant's call is answered tenant_not_served)")
