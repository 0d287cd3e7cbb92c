"""What an MCP host reads of the gateway before and instead of a proposal: tool hints, and args the schema refuses.

Driven by the `mcp` package's own client over scripted governance on a memory bus.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import mcp
import pytest

from schemas import ToolSpec
from tests.unit.client.test_mcp_gateway import rule, text_of
from tidegate.client import MemoryTransport, Tidegate
from tidegate.client.scripted import ScriptedTidegate
from tidegate.mcp_gateway import GatewaySettings, build_server

REFUND_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["customer_id", "amount_usd"],
    "properties": {"customer_id": {"type": "string", "pattern": "^cus_[0-9]+$"}, "amount_usd": {"type": "number", "exclusiveMinimum": 0}},
}


def spec(name: str, risk: str, **more: Any) -> ToolSpec:
    body = {"name": name, "description": name, "risk": risk, "kind": "python", "entrypoint": "x:y", "args_schema": REFUND_SCHEMA}
    return ToolSpec.model_validate(body | more)


CATALOG = [
    spec("get_ticket", "read", idempotent=True, untrusted_output=True),
    spec("lookup_order", "read"),
    spec("tag_ticket", "write_low", idempotent=True),
    spec("issue_refund", "financial"),
    spec("delete_customer_data", "destructive"),
]


@asynccontextmanager
async def gateway_client() -> AsyncIterator[tuple[mcp.Client, ScriptedTidegate]]:
    """An `mcp` client of the gateway (its client's task torn down in the test's own task), and the governance behind it."""
    bus = MemoryTransport()
    async with (
        ScriptedTidegate(bus, rule, tools={"issue_refund": lambda args: {"refunded": args["amount_usd"]}}) as scripted,
        Tidegate(transport=bus) as client,
        mcp.Client(build_server(client, CATALOG, GatewaySettings(on_escalation="pending"))) as agent,
    ):
        yield agent, scripted


async def test_tools_list_carries_the_catalogs_hints() -> None:
    async with gateway_client() as (client, _):
        hints = {t.name: t.annotations for t in (await client.list_tools()).tools}
    as_read = {name: (h.read_only_hint, h.destructive_hint, h.idempotent_hint, h.open_world_hint) for name, h in hints.items() if h}
    assert as_read == {
        "get_ticket": (True, None, None, True),  # a read of content from outside the tenant
        "lookup_order": (True, None, None, None),
        "tag_ticket": (False, False, True, None),
        "issue_refund": (False, False, False, None),
        "delete_customer_data": (False, True, False, None),
    }
    assert hints["tidegate_action_status"] is None


@pytest.mark.parametrize(
    ("args", "field", "says"),
    [
        ({"customer_id": "cus_1", "amount_usd": "nine hundred"}, "args.amount_usd", "'nine hundred' is not of type 'number'"),
        ({"customer_id": "cus_1"}, "args", "'amount_usd' is a required property"),
        ({"customer_id": "cus_1", "amount_usd": 9.0, "note": "x"}, "args", "'note' was unexpected"),
        ({"customer_id": "bob", "amount_usd": 9.0}, "args.customer_id", "does not match"),
    ],
    ids=["wrong-type", "missing", "extra", "pattern"],
)
async def test_args_the_schema_refuses_are_a_tool_error_naming_the_field_and_nothing_is_proposed(
    args: dict[str, Any], field: str, says: str
) -> None:
    async with gateway_client() as (client, scripted):
        refused = await client.call_tool("issue_refund", args)
        assert scripted.proposals == []
        fixed = await client.call_tool("issue_refund", {"customer_id": "cus_1", "amount_usd": 9.0})  # the corrected call is proposed
    assert refused.is_error
    assert refused.structured_content["outcome"] == "invalid_request"
    assert (refused.structured_content["field"], refused.structured_content["reason"]) == (field, "invalid_args")
    assert says in text_of(refused)
    assert "nothing was proposed" in text_of(refused)
    assert fixed.structured_content["outcome"] == "pending"
    assert len(scripted.proposals) == 1
