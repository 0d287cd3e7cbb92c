"""The MCP gateway driven by the `mcp` package's own client, over scripted governance on a memory bus."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import mcp
import pytest
from mcp import MCPError
from mcp import types as mcp_types

from schemas import ActionProposedData, ToolSpec
from tidegate.client import ClientSettings, Escalated, Executed, MemoryTransport, Tidegate
from tidegate.client.scripted import ScriptedTidegate
from tidegate.mcp_gateway import STATUS_TOOL, GatewaySettings, build_server
from tidegate.mcp_gateway.server import IDEMPOTENCY_META

CATALOG = [
    ToolSpec.model_validate(
        {
            "name": name,
            "description": f"{name} (test)",
            "risk": risk,
            "kind": "python",
            "entrypoint": "x:y",
            "args_schema": {"type": "object", "properties": {"amount_usd": {"type": "number"}}},
        }
    )
    for name, risk in (("tag_ticket", "write_low"), ("issue_refund", "financial"), ("delete_customer_data", "destructive"))
]


def rule(p: ActionProposedData) -> tuple[str, str]:
    if p.tool == "delete_customer_data":
        return "deny", "human_only"
    if p.tool == "issue_refund":
        return "escalate", "needs_human_approval"
    return "allow", "low_risk_write_allowed"


@pytest.fixture
async def stack() -> AsyncIterator[tuple[ScriptedTidegate, Tidegate]]:
    bus = MemoryTransport()
    tools = {"issue_refund": lambda args: {"refunded": args["amount_usd"]}, "tag_ticket": lambda args: {"tagged": True}}
    async with ScriptedTidegate(bus, rule, tools=tools) as scripted, Tidegate(transport=bus) as client:
        yield scripted, client


async def approve_when_pending(scripted: ScriptedTidegate, **edits: Any) -> None:
    while not scripted.pending():
        await asyncio.sleep(0.01)
    await scripted.approve(scripted.pending()[0].approval_id, edited_args=edits or None)


async def test_the_catalog_is_listed_and_an_allowed_call_runs_once(stack: tuple[ScriptedTidegate, Tidegate]) -> None:
    scripted, client = stack
    async with mcp.Client(build_server(client, CATALOG, GatewaySettings())) as mcp_client:
        listed = await mcp_client.list_tools()
        assert [t.name for t in listed.tools] == ["tag_ticket", "issue_refund", "delete_customer_data", STATUS_TOOL]
        assert listed.tools[1].input_schema["properties"] == {"amount_usd": {"type": "number"}}
        result = await mcp_client.call_tool("tag_ticket", {"ticket_id": "T-1"})
    assert (result.is_error, result.structured_content) == (False, {"tagged": True})
    assert scripted.calls == {"tag_ticket": [{"ticket_id": "T-1"}]}


async def test_a_retry_key_reused_for_another_call_is_refused_without_a_proposal(stack: tuple[ScriptedTidegate, Tidegate]) -> None:
    scripted, client = stack
    key = {IDEMPOTENCY_META: "mcp-call-1"}
    async with mcp.Client(build_server(client, CATALOG, GatewaySettings())) as mcp_client:
        first = await mcp_client.call_tool("tag_ticket", {"ticket_id": "T-1"}, meta=key)
        retried = await mcp_client.call_tool("tag_ticket", {"ticket_id": "T-1"}, meta=key)  # a retry: the first call's outcome
        other = await mcp_client.call_tool("tag_ticket", {"ticket_id": "T-9"}, meta=key)  # the same key for another call
    assert (first.is_error, retried.is_error, retried.structured_content) == (False, False, {"tagged": True})
    assert other.is_error
    assert other.structured_content == {"outcome": "action_id_reused", "action_id": "mcp-call-1"}
    assert scripted.calls == {"tag_ticket": [{"ticket_id": "T-1"}]}
    assert len(scripted.proposals) == 1


async def test_a_denied_call_is_a_tool_error_with_the_reason_codes(stack: tuple[ScriptedTidegate, Tidegate]) -> None:
    scripted, client = stack
    async with mcp.Client(build_server(client, CATALOG, GatewaySettings())) as mcp_client:
        result = await mcp_client.call_tool("delete_customer_data", {"customer_id": "c"})
    assert result.is_error
    assert result.structured_content["reasons"] == ["human_only"]
    assert "human_only" in result.content[0].text  # what a model reads
    assert scripted.calls == {}


async def test_an_escalated_call_waits_for_the_human_with_progress_notifications(stack: tuple[ScriptedTidegate, Tidegate]) -> None:
    scripted, client = stack
    progress: list[str | None] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message)

    settings = GatewaySettings(progress_every_s=0.05)
    async with mcp.Client(build_server(client, CATALOG, settings)) as mcp_client:
        human = asyncio.create_task(approve_when_pending(scripted, amount_usd=45.0))
        result = await mcp_client.call_tool("issue_refund", {"amount_usd": 90.0}, progress_callback=on_progress)
        await human
    assert (result.is_error, result.structured_content) == (False, {"refunded": 45.0})
    assert progress
    assert all(m is not None and "waiting for a human" in m and "needs_human_approval" in m for m in progress)
    assert scripted.calls == {"issue_refund": [{"amount_usd": 45.0}]}


async def test_a_rejected_escalation_is_a_tool_error(stack: tuple[ScriptedTidegate, Tidegate]) -> None:
    scripted, client = stack

    async def reject() -> None:
        while not scripted.pending():
            await asyncio.sleep(0.01)
        await scripted.reject(scripted.pending()[0].approval_id, comment="no")

    async with mcp.Client(build_server(client, CATALOG, GatewaySettings(progress_every_s=0.05))) as mcp_client:
        human = asyncio.create_task(reject())
        result = await mcp_client.call_tool("issue_refund", {"amount_usd": 90.0})
        await human
    assert result.is_error
    assert (result.structured_content["outcome"], result.structured_content["reasons"]) == ("rejected", ["approval_rejected"])
    assert scripted.calls == {}


async def test_in_pending_mode_an_escalated_call_returns_at_once_and_is_polled(stack: tuple[ScriptedTidegate, Tidegate]) -> None:
    scripted, client = stack
    async with mcp.Client(build_server(client, CATALOG, GatewaySettings(on_escalation="pending"))) as mcp_client:
        assert STATUS_TOOL in [t.name for t in (await mcp_client.list_tools()).tools]
        pending = await mcp_client.call_tool("issue_refund", {"amount_usd": 90.0})
        assert (pending.is_error, pending.structured_content["outcome"]) == (False, "pending")
        ask = {"action_id": pending.structured_content["action_id"], "position": pending.structured_content["position"]}
        still = await mcp_client.call_tool(STATUS_TOOL, ask)
        assert still.structured_content["outcome"] == "pending"
        assert scripted.calls == {}
        await approve_when_pending(scripted)
        done = await mcp_client.call_tool(STATUS_TOOL, ask)
    assert (done.is_error, done.structured_content) == (False, {"refunded": 90.0})
    assert len(scripted.calls["issue_refund"]) == 1


async def test_a_tool_outside_the_served_set_is_the_protocols_invalid_params_error_without_a_proposal(
    stack: tuple[ScriptedTidegate, Tidegate],
) -> None:
    """The MCP spec's error handling lists an unknown tool as a protocol error (-32602), not a tool result."""
    scripted, client = stack
    async with mcp.Client(build_server(client, CATALOG, GatewaySettings(tools=["tag_ticket"]))) as mcp_client:
        assert [t.name for t in (await mcp_client.list_tools()).tools] == ["tag_ticket", STATUS_TOOL]
        for name in ("issue_refund", "does_not_exist"):
            with pytest.raises(MCPError) as refused:
                await mcp_client.call_tool(name, {"amount_usd": 1.0})
            assert refused.value.code == mcp_types.INVALID_PARAMS
            assert f'unknown tool "{name}"' in refused.value.message
        assert (await mcp_client.call_tool("tag_ticket", {"ticket_id": "T-1"})).structured_content == {"tagged": True}  # still served
    assert [p.tool for p in scripted.proposals] == ["tag_ticket"]


async def test_a_call_that_waits_past_the_limit_returns_pending_and_can_be_polled(stack: tuple[ScriptedTidegate, Tidegate]) -> None:
    scripted, client = stack
    settings = GatewaySettings(wait_limit_s=0.2, progress_every_s=0.1)
    async with mcp.Client(build_server(client, CATALOG, settings)) as mcp_client:
        pending = await mcp_client.call_tool("issue_refund", {"amount_usd": 70.0})
        assert pending.structured_content["outcome"] == "pending"
        await approve_when_pending(scripted)
        done = await mcp_client.call_tool(STATUS_TOOL, {"action_id": pending.structured_content["action_id"]})
    assert done.structured_content == {"refunded": 70.0}


def text_of(result: mcp_types.CallToolResult) -> str:
    [content] = result.content
    assert isinstance(content, mcp_types.TextContent)
    return content.text


async def test_an_allowed_call_whose_result_is_late_is_pending_and_says_it_may_be_running() -> None:
    """Allowed, the tool still running: the MCP client is answered within a decision's wait, told the call may have happened."""
    bus = MemoryTransport()
    release = asyncio.Event()

    async def slow(args: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return {"tagged": True}

    async with (
        ScriptedTidegate(bus, rule, tools={"tag_ticket": slow}),
        Tidegate(ClientSettings(decision_timeout_s=0.3, result_timeout_s=60), transport=bus) as client,
        mcp.Client(build_server(client, CATALOG, GatewaySettings())) as mcp_client,
    ):
        pending = await asyncio.wait_for(mcp_client.call_tool("tag_ticket", {"ticket_id": "T-9"}), 10)  # not the 60 s result wait
        release.set()
    assert (pending.is_error, pending.structured_content["outcome"], pending.structured_content["allowed"]) == (False, "pending", True)
    said = text_of(pending)
    assert "Allowed" in said
    assert "may be running, or have happened" in said
    assert "has not run" not in said


async def test_a_call_without_a_decision_in_time_returns_pending_with_its_action_id_and_is_polled() -> None:
    """The proposal stands: the model gets what to poll instead of an internal error, and a retry under its id proposes nothing new."""
    bus = MemoryTransport()
    scripted = ScriptedTidegate(bus, rule, tools={"tag_ticket": lambda args: {"tagged": True}})  # not running yet: nobody decides
    async with (
        Tidegate(ClientSettings(decision_timeout_s=0.2), transport=bus) as client,
        mcp.Client(build_server(client, CATALOG, GatewaySettings())) as mcp_client,
    ):
        pending = await mcp_client.call_tool("tag_ticket", {"ticket_id": "T-3"})
        assert (pending.is_error, pending.structured_content["outcome"]) == (False, "pending")
        action_id = pending.structured_content["action_id"]
        assert pending.structured_content["poll"] == STATUS_TOOL
        said = text_of(pending)  # what a model reads
        assert action_id in said
        assert STATUS_TOOL in said
        # The gateway chose the id: it is no other call's, and the likely cause is the policy being slow or down. A model
        # told to call again under a new id (as it was) proposed the refund twice, and both ran once the policy was back.
        assert "may be slow or down" in said
        assert "new one" not in said
        assert "may be another's" not in said
        assert "do not call the tool again without it" in said
        ask = {"action_id": action_id, "position": pending.structured_content["position"]}
        assert (await mcp_client.call_tool(STATUS_TOOL, ask)).structured_content["outcome"] == "pending"
        retry_key: Any = {IDEMPOTENCY_META: action_id}
        async with scripted:  # governance comes back and decides the standing proposal
            done = await mcp_client.call_tool(STATUS_TOOL, ask)
            retried = await mcp_client.call_tool("tag_ticket", {"ticket_id": "T-3"}, meta=retry_key)
    assert (done.is_error, done.structured_content) == (False, {"tagged": True})
    assert (retried.is_error, retried.structured_content) == (False, {"tagged": True})
    assert [p.action_id for p in scripted.proposals] == [action_id]
    assert scripted.calls == {"tag_ticket": [{"ticket_id": "T-3"}]}


@pytest.mark.parametrize(
    ("arguments", "outcome", "says"),
    [
        ({}, "invalid_request", "action_id is required"),
        ({"action_id": "  "}, "invalid_request", "action_id is empty"),
        ({"action_id": "does-not-exist"}, "unknown", "unknown action"),
        ({"action_id": "x", "position": "garbage"}, "invalid_request", "position"),
    ],
    ids=["missing", "blank", "unknown", "garbage-position"],
)
async def test_the_status_tool_refuses_what_it_cannot_follow(
    stack: tuple[ScriptedTidegate, Tidegate], arguments: dict[str, Any], outcome: str, says: str
) -> None:
    _, client = stack
    async with mcp.Client(build_server(client, CATALOG, GatewaySettings())) as mcp_client:
        answer = await mcp_client.call_tool(STATUS_TOOL, arguments)
    assert answer.is_error
    assert answer.structured_content["outcome"] == outcome
    assert says in text_of(answer)


async def test_the_status_of_an_action_this_gateway_did_not_propose_is_unknown(stack: tuple[ScriptedTidegate, Tidegate]) -> None:
    """A tool caller (a prompt-injected model, another HTTP client) names an id it learned: the gateway tells it nothing of it."""
    scripted, client = stack
    async with Tidegate(ClientSettings(tenant="globex"), transport=client.transport) as globex:
        done = await globex.propose("issue_refund", {"amount_usd": 5.0}, action_id="globex-refund-1")
        approved = asyncio.create_task(approve_when_pending(scripted))
        assert isinstance(done, Escalated)
        await approved
        assert isinstance(await done.decision(timeout_s=5), Executed)
    async with mcp.Client(build_server(client, CATALOG, GatewaySettings())) as mcp_client:
        for ask in ({"action_id": "globex-refund-1"}, {"action_id": "globex-refund-1", "position": done.position}):
            answer = await mcp_client.call_tool(STATUS_TOOL, ask)
            assert answer.is_error
            assert answer.structured_content == {"outcome": "unknown", "action_id": "globex-refund-1"}
            assert "refunded" not in text_of(answer)


async def test_a_call_under_an_id_another_tenant_took_never_returns_its_result() -> None:
    """Another tenant's call under the id ran before this gateway's reader started: the call and its polls stay without answer."""
    bus = MemoryTransport()
    async with ScriptedTidegate(bus, rule, tools={"tag_ticket": lambda args: {"tagged": args["ticket_id"]}}) as scripted:
        async with Tidegate(ClientSettings(tenant="globex"), transport=bus) as globex:
            assert isinstance(await globex.propose("tag_ticket", {"ticket_id": "GLX-1"}, action_id="shared-id"), Executed)
        async with (
            Tidegate(ClientSettings(decision_timeout_s=0.3), transport=bus) as client,
            mcp.Client(build_server(client, CATALOG, GatewaySettings())) as mcp_client,
        ):
            called = await mcp_client.call_tool("tag_ticket", {"ticket_id": "T-1"}, meta={IDEMPOTENCY_META: "shared-id"})
            polled = await mcp_client.call_tool(STATUS_TOOL, {"action_id": "shared-id"})
    assert (called.is_error, called.structured_content["outcome"]) == (False, "pending")
    assert "may be another's" in text_of(called)
    assert (polled.is_error, polled.structured_content["outcome"]) == (False, "pending")
    assert "GLX-1" not in text_of(called) + text_of(polled)
    assert [p.tenant_id for p in scripted.refused] == ["acme"]
    assert scripted.calls == {"tag_ticket": [{"ticket_id": "GLX-1"}]}


async def test_a_call_whose_id_another_tenant_takes_meanwhile_is_refused_as_reused() -> None:
    bus = MemoryTransport()
    scripted = ScriptedTidegate(bus, rule, tools={"tag_ticket": lambda args: {"tagged": args["ticket_id"]}})  # decides once entered
    async with (
        Tidegate(ClientSettings(tenant="globex"), transport=bus) as globex,
        Tidegate(ClientSettings(decision_timeout_s=5), transport=bus) as client,
        mcp.Client(build_server(client, CATALOG, GatewaySettings())) as mcp_client,
    ):
        first = asyncio.create_task(globex.propose("tag_ticket", {"ticket_id": "GLX-1"}, action_id="shared-id"))
        while not bus.topics["actions.proposed"]:
            await asyncio.sleep(0.01)
        called = asyncio.create_task(mcp_client.call_tool("tag_ticket", {"ticket_id": "T-1"}, meta={IDEMPOTENCY_META: "shared-id"}))
        while len(bus.topics["actions.proposed"]) < 2:
            await asyncio.sleep(0.01)
        async with scripted:
            assert isinstance(await first, Executed)
            refused = await called
            polled = await mcp_client.call_tool(STATUS_TOOL, {"action_id": "shared-id"})
    assert refused.is_error
    assert refused.structured_content == {"outcome": "action_id_reused", "action_id": "shared-id"}
    assert (polled.is_error, polled.structured_content["outcome"]) == (True, "action_id_reused")
    assert scripted.calls == {"tag_ticket": [{"ticket_id": "GLX-1"}]}
