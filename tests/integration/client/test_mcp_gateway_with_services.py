"""An MCP client (the `mcp` package's) lists and calls governed tools through the gateway, against the real services.

The tool called is itself an upstream MCP server's (the example notes server, catalog kind `mcp`), so
this is the whole chain: MCP client → gateway → policy → (approval API) → executor → upstream MCP server.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import mcp
from conftest import Stack

from servicekit import ToolCatalog
from tidegate.client import ClientSettings, Tidegate
from tidegate.mcp_gateway import IDEMPOTENCY_META, STATUS_TOOL, GatewaySettings, build_server


def notes(tmp_path: Path) -> list[dict[str, object]]:
    db = tmp_path / "notes.json"
    return json.loads(db.read_text())["notes"] if db.exists() else []


async def test_mcp_calls_are_allowed_denied_and_escalated_then_approved(
    stack: Stack, client_settings: ClientSettings, tmp_path: Path
) -> None:
    catalog = ToolCatalog.load(stack.kit.tools_dir).tools.values()
    async with Tidegate(client_settings) as client, mcp.Client(build_server(client, catalog, GatewaySettings())) as agent:
        names = [t.name for t in (await agent.list_tools()).tools]
        assert {"notes_add_note", "issue_refund", "delete_customer_data"} <= set(names)

        added = await agent.call_tool("notes_add_note", {"customer": "cus_1001", "text": "called back"})
        assert not added.is_error, added.content
        assert added.structured_content == {"id": 1, "customer": "cus_1001", "text": "called back"}
        assert len(notes(tmp_path)) == 1

        denied = await agent.call_tool("delete_customer_data", {"customer_id": "cus_1001", "reason": "asked"})
        assert denied.is_error
        assert "human_only" in denied.structured_content["reasons"]

    # A draft-mode agent: every write needs a human, who approves through the approval API while the call waits.
    draft = client_settings.model_copy(update={"mode": "draft"})
    token = await stack.approver_token("bob@acme.example", ["support", "finance", "ops"])
    progress: list[str | None] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message)

    async def human() -> None:
        while True:
            listing = await stack.http.get(f"{stack.approval.http_url}/api/v1/approvals", headers={"Authorization": f"Bearer {token}"})
            mine = {"customer": "cus_1002", "text": "refund promised"}  # other tests of the tenant may leave requests pending
            listed = listing.json() if listing.status_code == 200 else []
            pending = [a for a in listed if a["status"] == "pending" and a["tool"] == "notes_add_note" and a["args"] == mine]
            if pending and progress:  # approve only once the caller is visibly waiting
                await stack.decide(pending[0]["approval_id"], "approve", token)
                return
            await asyncio.sleep(0.1)

    async with Tidegate(draft) as client, mcp.Client(build_server(client, catalog, GatewaySettings(progress_every_s=0.2))) as agent:
        approving = asyncio.create_task(human())
        waited = await asyncio.wait_for(
            agent.call_tool("notes_add_note", {"customer": "cus_1002", "text": "refund promised"}, progress_callback=on_progress), 90
        )
        await approving
    assert not waited.is_error, waited.content
    assert waited.structured_content["customer"] == "cus_1002"
    assert any(m and "waiting for a human" in m for m in progress)
    assert [n["customer"] for n in notes(tmp_path)] == ["cus_1001", "cus_1002"]


async def approve_then_poll(stack: Stack, agent: mcp.Client, ask: dict[str, Any], token: str, wait_for: Any) -> Any:
    """Approve the pending call `ask` names over the approval API, then poll the status tool until it is no longer pending."""
    listing = await stack.http.get(f"{stack.approval.http_url}/api/v1/approvals", headers={"Authorization": f"Bearer {token}"})
    [request] = [a for a in listing.json() if a["action_id"] == ask["action_id"]]
    await stack.decide(request["approval_id"], "approve", token)

    async def settled() -> Any:
        answer = await agent.call_tool(STATUS_TOOL, ask)
        return answer if answer.structured_content.get("outcome") != "pending" else None

    return await wait_for(settled, timeout=60, interval=0.2, what="the approved call's result")


async def test_in_pending_mode_an_escalated_mcp_call_returns_at_once_and_is_polled_until_a_human_approves(
    stack: Stack, client_settings: ClientSettings, tmp_path: Path, wait_for: Any
) -> None:
    """`TIDEGATE_MCP_ON_ESCALATION=pending`: the client is not held; it polls `tidegate_action_status` after the approval API's grant."""
    catalog = ToolCatalog.load(stack.kit.tools_dir).tools.values()
    draft = client_settings.model_copy(update={"mode": "draft"})  # every write needs a human
    token = await stack.approver_token("bob@acme.example", ["support", "finance", "ops"])
    settings = GatewaySettings(on_escalation="pending")
    async with Tidegate(draft) as client, mcp.Client(build_server(client, catalog, settings)) as agent:
        pending = await agent.call_tool("notes_add_note", {"customer": "cus_1003", "text": "call on Monday"})
        assert not pending.is_error, pending.content
        assert pending.structured_content["outcome"] == "pending"
        ask = {"action_id": pending.structured_content["action_id"], "position": pending.structured_content["position"]}
        assert (await agent.call_tool(STATUS_TOOL, ask)).structured_content["outcome"] == "pending"
        assert notes(tmp_path) == []

        done = await approve_then_poll(stack, agent, ask, token, wait_for)
    assert not done.is_error, done.content
    assert done.structured_content["customer"] == "cus_1003"
    assert [n["customer"] for n in notes(tmp_path)] == ["cus_1003"]


def _gateway_process(stack: Stack, client_settings: ClientSettings, **more: str) -> mcp.StdioServerParameters:
    """`tidegate mcp serve` on stdio, configured by the environment as the test's client (its state dir too), plus `more`."""
    env = {
        **os.environ,
        "TIDEGATE_CLIENT_KAFKA_BOOTSTRAP": client_settings.kafka_bootstrap,
        "TIDEGATE_CLIENT_TOPIC_PREFIX": client_settings.topic_prefix,
        "TIDEGATE_CLIENT_TENANT": "acme",
        "TIDEGATE_CLIENT_PRINCIPAL": "alice@acme.example",
        # the registered client key signs its proposals, as in `client_settings`
        "TIDEGATE_CLIENT_SIGNING_KEY_PATH": str(client_settings.signing_key_path),
        "TIDEGATE_CLIENT_TOOL_KEYS_DIR": str(client_settings.tool_keys_dir),
        "TIDEGATE_CLIENT_SERVICE_KEYS_DIR": str(client_settings.service_keys_dir),
        "TIDEGATE_CLIENT_STATE_DIR": str(client_settings.state_dir),
        **({"TIDEGATE_CLIENT_SASL_USERNAME": client_settings.sasl_username} if client_settings.sasl_username else {}),
        **({"TIDEGATE_CLIENT_SASL_PASSWORD": client_settings.sasl_password.get_secret_value()} if client_settings.sasl_password else {}),
        "TIDEGATE_CLIENT_SASL_MECHANISM": client_settings.sasl_mechanism,  # admin's, which a rotation moves
        "TIDEGATE_MCP_TOOLS_DIR": str(stack.kit.tools_dir),
        **more,
    }
    return mcp.StdioServerParameters(command=sys.executable, args=["-m", "tidegate.cli", "mcp", "serve"], env=env, cwd=str(Path.cwd()))


async def test_tidegate_mcp_serve_over_stdio_governs_calls(stack: Stack, client_settings: ClientSettings, tmp_path: Path) -> None:
    """`tidegate mcp serve` as an MCP client starts it: a subprocess on stdio, configured by the environment."""
    server = _gateway_process(stack, client_settings, TIDEGATE_MCP_TOOLS='["notes_add_note", "delete_customer_data"]')
    async with mcp.Client(server) as agent:
        assert sorted(t.name for t in (await agent.list_tools()).tools) == [
            "delete_customer_data",
            "notes_add_note",
            "tidegate_action_status",
        ]
        added = await agent.call_tool("notes_add_note", {"customer": "cus_1003", "text": "over stdio"})
        denied = await agent.call_tool("delete_customer_data", {"customer_id": "cus_1003", "reason": "asked"})
    assert not added.is_error, added.content
    assert added.structured_content["text"] == "over stdio"
    assert denied.is_error
    assert "human_only" in denied.structured_content["reasons"]
    assert [n["customer"] for n in notes(tmp_path)] == ["cus_1003"]


async def test_a_restarted_gateway_process_answers_a_poll_without_a_position_and_a_retry_follows_the_first_proposal(
    stack: Stack, client_settings: ClientSettings, tmp_path: Path, wait_for: Any
) -> None:
    """What the gateway proposed is kept in the client's state dir: a new `tidegate mcp serve` still knows the action."""
    pending_mode = {"TIDEGATE_CLIENT_MODE": "draft", "TIDEGATE_MCP_ON_ESCALATION": "pending", "TIDEGATE_MCP_TOOLS": '["notes_add_note"]'}
    call = {"customer": "cus_1004", "text": "after a restart"}
    async with mcp.Client(_gateway_process(stack, client_settings, **pending_mode)) as agent:
        pending = await agent.call_tool("notes_add_note", call)
    assert not pending.is_error, pending.content
    assert pending.structured_content["outcome"] == "pending"
    ask = {"action_id": pending.structured_content["action_id"]}  # no position: the model kept the id only

    async with mcp.Client(_gateway_process(stack, client_settings, **pending_mode)) as agent:  # the gateway restarted
        still = await agent.call_tool(STATUS_TOOL, ask)
        assert (still.is_error, still.structured_content["outcome"]) == (False, "pending"), still.content
        token = await stack.approver_token("bob@acme.example", ["support", "finance", "ops"])
        done = await approve_then_poll(stack, agent, ask, token, wait_for)
        retried = await agent.call_tool("notes_add_note", call, meta={IDEMPOTENCY_META: ask["action_id"]})
    assert not done.is_error, done.content
    assert done.structured_content["customer"] == "cus_1004"
    assert (retried.is_error, retried.structured_content) == (False, done.structured_content), retried.content
    assert [n["customer"] for n in notes(tmp_path)] == ["cus_1004"]  # once
