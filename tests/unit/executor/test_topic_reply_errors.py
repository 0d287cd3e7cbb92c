"""A `topic` tool's reply error reaches the retry loop as the service said it: retryable, maybe applied."""

from __future__ import annotations

import asyncio

import pytest

import schemas as s
from servicekit.toolcontract import ToolContext, ToolError
from services.executor.tools import TopicTools


@pytest.mark.parametrize(("retryable", "maybe_applied"), [(True, False), (False, True), (True, True), (False, False)])
async def test_a_reply_error_keeps_whether_it_may_be_retried_and_whether_it_may_have_taken_effect(
    retryable: bool, maybe_applied: bool
) -> None:
    tools: TopicTools

    async def publish(topic: str, event: s.Envelope) -> None:
        d = event.data  # type: ignore[attr-defined]
        err = s.ErrorInfo(type="payments_timeout", message="read timed out after sending", retryable=retryable, maybe_applied=maybe_applied)
        reply = s.ToolReplyData(action_id=d.action_id, task_id=d.task_id, tenant_id=d.tenant_id, tool=d.tool, ok=False, error=err)
        asyncio.get_running_loop().call_soon(asyncio.ensure_future, tools.on_reply(s.ToolReply.build(reply, source="payments")))

    tools = TopicTools(publish, "pfx.")
    spec = s.ToolSpec.model_validate({"name": "refund", "description": "d", "args_schema": {}, "risk": "financial", "kind": "topic"})
    ctx = ToolContext(pool=None, tenant_id="acme", action_id="a-1", idempotency_key="a-1", task_id="t-1")  # type: ignore[arg-type]
    with pytest.raises(ToolError) as raised:
        await asyncio.wait_for(tools.invoke(spec, ctx, {}), timeout=5)
    assert (raised.value.type, raised.value.retryable, raised.value.maybe_applied) == ("payments_timeout", retryable, maybe_applied)
