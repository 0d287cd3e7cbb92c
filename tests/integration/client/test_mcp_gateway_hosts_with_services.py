"""MCP hosts as they come, against the real policy, approval and executor services, over streamable HTTP.

A host that sends no `progressToken` with its `tools/call` (the MCP Inspector's CLI; the `mcp` SDK's `call_tool` without
a `progress_callback`) never sees the gateway's progress notifications, so nothing keeps its request open while a human
decides; the TypeScript SDK's hosts cut such a call off at 60 s by default, unanswered: no action id, no approval id.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from conftest import Stack
from test_mcp_gateway_sessions_with_services import http_gateway, session
from test_mcp_gateway_with_services import approve_then_poll, notes

from tidegate.client import ClientSettings, Tidegate, governed
from tidegate.mcp_gateway import STATUS_TOOL


async def test_a_host_that_asked_for_no_progress_is_answered_pending_before_its_request_times_out_and_polls_the_result(
    stack: Stack, client_settings: ClientSettings, tmp_path: Path, wait_for: Any
) -> None:
    """Finding (mcpdev): the Inspector CLI's escalated call in `wait` mode timed out at 60 s with nothing to poll."""
    draft = client_settings.model_copy(update={"mode": "draft"})  # every write needs a human
    token = await stack.approver_token("bob@acme.example", ["support", "finance", "ops"])
    wait = {"on_escalation": "wait", "wait_without_progress_s": 3.0, "progress_every_s": 0.5}
    async with http_gateway(stack, draft, **wait) as url, session(url) as host:
        came = time.monotonic()
        # The host's own request timeout: 60 s in the TypeScript SDK, here 30 s; before, the call waited for the human.
        held = await asyncio.wait_for(host.call_tool("notes_add_note", {"customer": "cus_1004", "text": "call back"}), 30)
        assert time.monotonic() - came < 30
        assert not held.is_error, held.content
        assert held.structured_content["outcome"] == "pending"
        assert held.structured_content["approval_id"].startswith("ap-")
        assert held.structured_content["action_id"] in held.content[0].text  # type: ignore[union-attr]
        assert notes(tmp_path) == []
        done = await approve_then_poll(stack, host, {"action_id": held.structured_content["action_id"]}, token, wait_for)
        assert not done.is_error, done.content
        assert done.structured_content["customer"] == "cus_1004"

        # A host that asked for progress is kept waiting past that bound, and gets the result once the human approves.
        progress: list[str] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append(message or "")

        call = {"customer": "cus_1005", "text": "waits with progress"}
        waits = asyncio.create_task(host.call_tool("notes_add_note", call, progress_callback=on_progress))
        await wait_for(lambda: len(progress) >= 10, timeout=30, interval=0.1, what="progress for longer than the bound")
        assert not waits.done()
        listing = await stack.http.get(f"{stack.approval.http_url}/api/v1/approvals", headers={"Authorization": f"Bearer {token}"})
        [request] = [a for a in listing.json() if a["status"] == "pending" and a["args"] == call]
        await stack.decide(request["approval_id"], "approve", token)
        answered = await asyncio.wait_for(waits, 60)
    assert not answered.is_error, answered.content
    assert answered.structured_content["customer"] == "cus_1005"
    assert [n["customer"] for n in notes(tmp_path)] == ["cus_1004", "cus_1005"]


async def test_a_host_that_asked_for_no_progress_gets_an_allowed_but_slow_call_pending_within_its_bound_and_polls_the_result(
    stack: Stack, client_settings: ClientSettings, wait_for: Any
) -> None:
    """Finding (agentsdev): an allowed call waited the decision's 30 s and then 30 s more for its result, the TypeScript
    SDK's whole 60 s request timeout, so a slow tool's call from a host without progress could be cut off unanswered.
    The decision and the result now share the host's bound (`WAIT_WITHOUT_PROGRESS_S`), then the call is pending."""
    release = asyncio.Event()  # the slow tool runs until the host has its answer (its timeout_s, 10 s, cancels it after)
    async with Tidegate(client_settings) as server:

        @governed("reorder_stock", client=server)  # the integrator's slow function, served by a process of its own
        async def reorder_stock(sku: str, quantity: int) -> dict[str, Any]:
            await release.wait()
            return {"po": f"PO-{sku}-{quantity}"}

        await server.serve_gates["reorder_stock"].check()
        bound = {"on_escalation": "wait", "tools": ["reorder_stock"], "wait_without_progress_s": 2.0}
        async with http_gateway(stack, client_settings, **bound) as url, session(url) as host:
            came = time.monotonic()
            # The host's own request timeout, 8 s here (60 s in the TypeScript SDK); before, the result was waited for
            # the client's DECISION_TIMEOUT_S (45 s in these tests) after the decision, while the tool ran.
            try:
                held = await asyncio.wait_for(host.call_tool("reorder_stock", {"sku": "KB-9", "quantity": 2}), 8)
            finally:
                release.set()
            assert time.monotonic() - came < 8
            assert not held.is_error, held.content
            assert held.structured_content["outcome"] == "pending"
            ask = {"action_id": held.structured_content["action_id"]}

            async def done() -> Any:
                answer = await host.call_tool(STATUS_TOOL, ask)
                return answer if answer.structured_content.get("outcome") != "pending" else None

            polled = await wait_for(done, timeout=60, interval=0.5, what="the slow call's result")
    assert not polled.is_error, polled.content
    assert "PO-KB-9-2" in polled.content[0].text  # type: ignore[union-attr]  # the served function ran, once


async def test_a_host_that_asked_for_progress_hears_a_slow_call_run_and_who_approved_an_escalated_one(
    stack: Stack, client_settings: ClientSettings, wait_for: Any
) -> None:
    """Finding (integrator3): while an allowed call's slow tool ran, the MCP host heard nothing until the answer; and once
    the human approved an escalated call, the notifications kept saying "waiting for a human" while it ran.

    The developer's host (the `mcp` SDK's client, a `progress_callback`) now hears that the call is allowed and running,
    and, for an escalated call, who approved it, both with the action id to poll if the call is cut off.
    """
    release = asyncio.Event()
    entered: list[str] = []
    draft = client_settings.model_copy(update={"mode": "draft"})  # every write needs a human
    token = await stack.approver_token("bob@acme.example", ["support", "finance", "ops"])
    async with Tidegate(client_settings) as server:

        @governed("reorder_stock", client=server)  # the integrator's slow function, served by a process of its own
        async def reorder_stock(sku: str, quantity: int) -> dict[str, Any]:
            entered.append(sku)
            await release.wait()
            return {"po": f"PO-{sku}-{quantity}"}

        await server.serve_gates["reorder_stock"].check()

        async def heard_while_it_runs(settings: ClientSettings, sku: str) -> list[str]:
            """The host's progress messages of one slow call, once it ran; `running`: what it must have heard meanwhile."""
            release.clear()
            heard: list[str] = []

            async def on_progress(done: float, total: float | None, message: str | None) -> None:
                heard.append(message or "")

            wait = {"on_escalation": "wait", "tools": ["reorder_stock"], "progress_every_s": 0.3}
            async with http_gateway(stack, settings, **wait) as url, session(url) as host:
                call = asyncio.create_task(host.call_tool("reorder_stock", {"sku": sku, "quantity": 2}, progress_callback=on_progress))
                running = "allowed; running: the executor has not reported its result yet."
                if settings is draft:
                    await wait_for(lambda: any(m.startswith("waiting for a human") for m in heard), timeout=60, what="the escalation")
                    listing = await stack.http.get(
                        f"{stack.approval.http_url}/api/v1/approvals", headers={"Authorization": f"Bearer {token}"}
                    )
                    [request] = [a for a in listing.json() if a["status"] == "pending" and a["args"].get("sku") == sku]
                    await stack.decide(request["approval_id"], "approve", token)
                    running = f"approved by bob@acme.example (approval {request['approval_id']}); running"
                try:
                    await wait_for(lambda: sku in entered and any(m.startswith(running) for m in heard), timeout=60, what=running)
                    assert not call.done()
                finally:
                    release.set()
                answered = await asyncio.wait_for(call, 60)
            assert not answered.is_error, answered.content
            assert f"PO-{sku}-2" in answered.content[0].text  # type: ignore[union-attr]
            return [m for m in heard if m.startswith(running)]

        for settings, sku in ((client_settings, "KB-1"), (draft, "KB-2")):
            said = (await heard_while_it_runs(settings, sku))[0]
            assert "tidegate_action_status" in said  # what to poll if the call is cut off
            assert '{"action_id": "mcp-' in said
    assert entered == ["KB-1", "KB-2"]  # each ran once
