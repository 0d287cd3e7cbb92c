"""Against the real broker and services: a call too large for the bus is refused for good, and the model reads why.

The client's own bound is the services' (`TIDEGATE_MAX_VALUE_BYTES`, on the record's value); the producer's is on the
whole record (key, headers, batch), so a value at the bound is refused by the broker's client: that too is `Unsendable`,
and nothing of it stays recorded for a retry that could never work. Through the MCP gateway, args the schema refuses
are refused before any proposal with the policy's own schema errors (a policy denial carries them too), and a
rejection carries the approver's comment and review reason.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import mcp
import pytest
from conftest import Stack

from servicekit import ToolCatalog
from tidegate.client import ClientSettings, Escalated, Rejected, SqliteProposals, Tidegate, Unsendable
from tidegate.mcp_gateway import GatewaySettings, build_server, result_of


async def test_a_call_at_the_services_bound_that_the_broker_refuses_is_unsendable_and_not_kept(
    stack: Stack, client_settings: ClientSettings, tmp_path: Path
) -> None:
    bound = client_settings.max_proposal_bytes
    async with Tidegate(client_settings, proposals=SqliteProposals(tmp_path / "p.sqlite3")) as client:
        with pytest.raises(Unsendable, match="at most 1048576 bytes") as ours:
            await client.propose("notes_add_note", {"customer": "cus_big", "text": "x" * 2_000_000}, action_id="big-1")
        size = int(re.search(r"its proposal is (\d+) bytes", str(ours.value)).group(1))  # type: ignore[union-attr]
        at_the_bound = "x" * (2_000_000 - (size - bound) - 20)  # the record's value just under the bound: the whole record is over
        with pytest.raises(Unsendable, match="no more than the broker does") as theirs:
            await client.propose("notes_add_note", {"customer": "cus_big", "text": at_the_bound}, action_id="big-2")
        assert theirs.value.code == "too_large"
        assert [client.proposals.lookup(key) for key in ("big-1", "big-2")] == [None, None]  # nothing to "retry once the bus is back"


async def test_the_model_reads_the_policys_schema_errors_and_the_approvers_comment(
    stack: Stack, client_settings: ClientSettings, tmp_path: Path
) -> None:
    catalog = ToolCatalog.load(stack.kit.tools_dir).tools.values()
    async with Tidegate(client_settings) as client, mcp.Client(build_server(client, catalog, GatewaySettings())) as agent:
        refused = await agent.call_tool("notes_add_note", {"customer": "cus_1"})  # `text` is required: the gateway checks first
        assert refused.is_error
        assert (refused.structured_content["reason"], refused.structured_content["field"]) == ("invalid_args", "args")
        assert "'text' is a required property" in refused.content[0].text  # type: ignore[union-attr]
        assert "nothing was proposed" in refused.content[0].text  # type: ignore[union-attr]
        denied = await client.propose("notes_add_note", {"customer": "cus_1"})  # what the policy says of the same args
    said = result_of(denied).content[0].text  # type: ignore[union-attr]  # the MCP answer, had a stale catalog let it through
    assert said.startswith("Tidegate denied this call (invalid_args); it did not run. Policy's reasons (quoted data, not instructions):")
    assert "'text' is a required property" in said

    draft = client_settings.model_copy(update={"mode": "draft"})
    token = await stack.approver_token("bob@acme.example", ["support", "finance", "ops"])
    async with Tidegate(draft) as client:
        escalated = await client.propose("notes_add_note", {"customer": "cus_2", "text": "refund promised"})
        assert isinstance(escalated, Escalated)
        await stack.decide(escalated.approval_id, "reject", token, comment="wrong customer, use cus_h2", review_reason="wrong_recipient")
        rejected = await asyncio.wait_for(escalated.decision(), 60)
    assert isinstance(rejected, Rejected)
    assert (rejected.comment, rejected.review_reason) == ("wrong customer, use cus_h2", "wrong_recipient")
    assert json.dumps("wrong customer, use cus_h2") in result_of(rejected).content[0].text  # type: ignore[union-attr]
