"""`tidegate topics check` compares each principal's ACLs on the real broker with the table of rights, not only the topics.

A release that adds a right (the executor reads `actions.results` at start) on a broker no one ran `tidegate topics
ensure` on since leaves that service unable to start, while a check of the topics alone said all was well (restore7
F3). Every rule changed here is on this test's own prefix (the `kit` fixture's, revoked when the prefix is dropped) and
is put back in a `finally`: the broker's other rules are never touched.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import CreateAclsRequest, DeleteAclsRequest
from click.testing import Result
from typer.testing import CliRunner

from servicekit import ADMIN, KitSettings, ToolCatalog, kafka_options
from servicekit.bus_acls import HeldRule, check_rights
from servicekit.bus_rights import AclBinding, Operation, Pattern, Resource
from tests.conftest import eventually
from tidegate.cli import app

_ALLOW = 3
_ANY_HOST = "*"


@pytest.fixture
async def admin(kit: KitSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN))
    await client.start()
    try:
        yield client
    finally:
        await client.close()


def rule(b: AclBinding) -> tuple[int, str, int, str, str, int, int]:
    return (b.resource, b.name, b.pattern, b.principal, _ANY_HOST, b.operation, _ALLOW)


async def delete(admin: AIOKafkaAdminClient, binding: AclBinding) -> None:
    response: Any = await admin._send_request(DeleteAclsRequest(*rule(binding)))
    assert [r[0] for r in response.filter_responses] == [0], response


async def create(admin: AIOKafkaAdminClient, binding: AclBinding) -> None:
    response: Any = await admin._send_request(CreateAclsRequest(*rule(binding)))
    assert [r[0] for r in response.creation_responses] == [0], response


async def topics(kit: KitSettings, *args: str) -> Result:
    """`tidegate topics <args>` on this test's prefix (in a thread: the CLI runs its own event loop)."""
    env = {"TIDEGATE_KAFKA_BOOTSTRAP": kit.kafka_bootstrap, "TIDEGATE_TOPIC_PREFIX": kit.topic_prefix, "COLUMNS": "200"}
    return await asyncio.to_thread(CliRunner().invoke, app, ["topics", *args], env=env)


async def check_once(kit: KitSettings, expect_exit: int, text: str) -> Result | None:
    """`topics check` once: the result if it exits `expect_exit` saying `text`, else None (the broker's authorizer applies
    a change a moment after the controller commits it, so a caller polls)."""
    result = await topics(kit, "check")
    return result if result.exit_code == expect_exit and text in result.stdout else None


async def test_a_right_the_table_grants_missing_on_the_broker_is_named_and_fails_until_ensure(
    kit: KitSettings, admin: AIOKafkaAdminClient
) -> None:
    executor_reads_results = AclBinding(
        Resource.TOPIC, kit.topic_prefix + "actions.results", Pattern.LITERAL, "User:executor", Operation.READ
    )
    named = f"User:executor READ topic {kit.topic_prefix}actions.results"
    await eventually(lambda: check_once(kit, 0, "rights the table grants are on the broker"), timeout=30, what="topics check passing")
    await delete(admin, executor_reads_results)  # a broker as a release before the executor's read right left it
    try:
        failed = await eventually(lambda: check_once(kit, 1, named), timeout=30, what="topics check naming the missing right")
        assert f"missing right: {named}" in failed.stdout
        assert "`tidegate topics ensure`" in failed.stdout
        assert "topics are on the broker as the catalog asks" in failed.stdout  # the topics alone were all well

        as_json = await topics(kit, "check", "--json")
        assert as_json.exit_code == 1
        lines = [json.loads(line) for line in as_json.stdout.splitlines()]
        missing = [line for line in lines if line.get("state") == "missing"]
        assert missing == [{"rule": named, "state": "missing", **vars(HeldRule.granted(executor_reads_results))}]
        summary = lines[-1]["rights"]
        assert (summary["authorizer"], summary["missing"], summary["extra"], summary["ok"]) == (True, 1, 0, False)
        assert all(line.get("ok") for line in lines if "topic" in line)

        ensured = await topics(kit, "ensure")  # what the check says to run
        assert ensured.exit_code == 0, ensured.stdout
        await eventually(
            lambda: check_once(kit, 0, "rights the table grants are on the broker"), timeout=30, what="topics check passing again"
        )
    finally:
        await create(admin, executor_reads_results)  # as the fixture made it, whatever failed above


async def test_a_rule_the_table_does_not_grant_is_a_warning_not_a_fault(kit: KitSettings, admin: AIOKafkaAdminClient) -> None:
    # What a hand (or an attacker who held `admin` a moment) left: the agent may write authorizations.
    agent_writes_authorizations = AclBinding(
        Resource.TOPIC, kit.topic_prefix + "actions.authorized", Pattern.LITERAL, "User:agent", Operation.WRITE
    )
    named = f"User:agent WRITE topic {kit.topic_prefix}actions.authorized"
    await create(admin, agent_writes_authorizations)
    try:
        warned = await eventually(lambda: check_once(kit, 0, named), timeout=30, what="topics check naming the extra rule")
        assert f"WARNING: a rule the table does not grant: {named}" in warned.stdout
        assert "1 rule on the broker the table does not grant" in warned.stdout

        tools = [t.name for t in ToolCatalog.load(kit.tools_dir).values() if t.kind == "topic"]
        rights = await check_rights(kit.kafka_bootstrap, kit.topic_prefix, tools)
        assert rights.ok
        assert [str(r) for r in rights.extra] == [named]  # only this prefix's: the many other prefixes' rules on the broker are not
    finally:
        await delete(admin, agent_writes_authorizations)
