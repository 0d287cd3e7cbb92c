"""Attacker tests against the real services: a client never takes another tenant's decision or result for its own.

Action ids are global, and the policy keeps the first tenant's: tenant globex proposes an id first, then
tenant acme's MCP tool caller calls under the same id (`_meta`), as a model told to retry, or an attacker
who learned it, would. The policy dead-letters acme's proposal `action_id_reused`; acme's call and polls
must say so or stay pending, and never hand acme globex's private result.
"""

from __future__ import annotations

import asyncio
from typing import Any

import mcp
from conftest import Stack

from servicekit import ToolCatalog, client_key, client_private_key
from services.approval import auth
from tidegate.client import ClientSettings, Escalated, Executed, Tidegate, governed
from tidegate.mcp_gateway import IDEMPOTENCY_META, STATUS_TOOL, GatewaySettings, build_server

SHARED = "shared-id-42"
PRIVATE = "GLOBEX-PRIVATE-PO"


def globex_settings(stack: Stack, client_settings: ClientSettings) -> ClientSettings:
    client_key(stack.kit, "globex", "mallory@globex.example")  # `tidegate clients add globex mallory@globex.example`
    return client_settings.model_copy(
        update={
            "tenant": "globex",
            "principal": "mallory@globex.example",
            "signing_key_path": client_private_key(stack.kit, "globex", "mallory@globex.example"),
            "mode": "draft",  # every write waits for globex's approver
        }
    )


async def approve_as_globex(stack: Stack, approval_id: str) -> None:
    assert stack.approval.pool is not None
    token = auth.new_token()
    groups = ["support", "finance", "ops"]
    await stack.approval.approval.repo.add_token(auth.hash_token(token), "gina@globex.example", "globex", groups)
    headers = {"Authorization": f"Bearer {token}"}
    record = await stack.http.get(f"{stack.approval.http_url}/api/v1/approvals/{approval_id}", headers=headers)
    assert record.status_code == 200, record.text
    answer = await stack.http.post(
        f"{stack.approval.http_url}/api/v1/approvals/{approval_id}/approve",
        json={"action_digest": record.json()["action_digest"]},
        headers=headers,
    )
    assert answer.status_code == 200, answer.text


def said(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content) + str(result.structured_content)


async def test_acme_calling_under_globexs_action_id_never_gets_globexs_outcome(stack: Stack, client_settings: ClientSettings) -> None:
    catalog = ToolCatalog.load(stack.kit.tools_dir).tools.values()
    acme = client_settings.model_copy(update={"decision_timeout_s": 5})
    ran: list[tuple[str, int]] = []
    async with Tidegate(globex_settings(stack, client_settings)) as globex:

        @governed("reorder_stock", client=globex)
        async def reorder_stock(sku: str, quantity: int) -> dict[str, Any]:
            ran.append((sku, quantity))
            return {"po": f"{PRIVATE}-{sku}-{quantity}", "supplier_account": "acct-globex-7731"}

        # acme's gateway was already running when globex proposed: its ledger's position is before globex's decision.
        async with Tidegate(acme) as early, mcp.Client(build_server(early, catalog, GatewaySettings())) as agent:
            taken = await globex.propose("reorder_stock", {"sku": "GLX-1", "quantity": 3}, action_id=SHARED)
            assert isinstance(taken, Escalated)
            called = await agent.call_tool("reorder_stock", {"sku": "ACME-9", "quantity": 1}, meta={IDEMPOTENCY_META: SHARED})
            assert (called.is_error, called.structured_content["outcome"]) == (False, "pending"), said(called)
            refused = await agent.call_tool(STATUS_TOOL, {"action_id": SHARED})  # read from acme's position: globex's decision
            assert refused.is_error
            assert refused.structured_content == {"outcome": "action_id_reused", "action_id": SHARED}

            await approve_as_globex(stack, taken.approval_id)
            done = await taken.decision(timeout_s=60)
            assert isinstance(done, Executed)
            assert done.result["value"]["po"] == f"{PRIVATE}-GLX-1-3"  # globex's own call ran, and globex sees its result

            polled = await agent.call_tool(STATUS_TOOL, {"action_id": SHARED})
            assert polled.structured_content["outcome"] == "action_id_reused", said(polled)

        # A gateway started after globex's decision cannot tell the id was taken: its call stays pending, never globex's result.
        async with Tidegate(acme) as late, mcp.Client(build_server(late, catalog, GatewaySettings())) as agent:
            later = await agent.call_tool("reorder_stock", {"sku": "ACME-9", "quantity": 1}, meta={IDEMPOTENCY_META: SHARED})
            late_poll = await agent.call_tool(STATUS_TOOL, {"action_id": SHARED})
            with_position = await agent.call_tool(STATUS_TOOL, {"action_id": SHARED, "position": taken.position})
            elsewhere = await agent.call_tool(STATUS_TOOL, {"action_id": "an-id-this-gateway-never-proposed"})
    for answer in (called, refused, polled, later, late_poll, with_position):
        assert PRIVATE not in said(answer)
        assert "acct-globex" not in said(answer)
    assert later.structured_content["outcome"] == "pending"
    assert with_position.structured_content["outcome"] == "action_id_reused"  # from before globex's decision: it is seen
    assert (elsewhere.is_error, elsewhere.structured_content["outcome"]) == (True, "unknown")
    assert ran == [("GLX-1", 3)]


async def test_the_status_tool_answers_nothing_about_another_tenants_action(stack: Stack, client_settings: ClientSettings) -> None:
    catalog = ToolCatalog.load(stack.kit.tools_dir).tools.values()
    async with Tidegate(globex_settings(stack, client_settings)) as globex:

        @governed("reorder_stock", client=globex)
        async def reorder_stock(sku: str, quantity: int) -> dict[str, Any]:
            return {"po": f"{PRIVATE}-{sku}"}

        taken = await globex.propose("reorder_stock", {"sku": "GLX-2", "quantity": 1}, action_id="globex-only-7")
        assert isinstance(taken, Escalated)
        await approve_as_globex(stack, taken.approval_id)
        assert isinstance(await taken.decision(timeout_s=60), Executed)
        async with Tidegate(client_settings) as client, mcp.Client(build_server(client, catalog, GatewaySettings())) as agent:
            answers = await asyncio.gather(
                agent.call_tool(STATUS_TOOL, {"action_id": "globex-only-7"}),
                agent.call_tool(STATUS_TOOL, {"action_id": "globex-only-7", "position": taken.position}),
            )
    for answer in answers:
        assert (answer.is_error, answer.structured_content) == (True, {"outcome": "unknown", "action_id": "globex-only-7"})
        assert PRIVATE not in said(answer)
