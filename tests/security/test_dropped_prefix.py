"""A prefix that goes away takes its rights with it: nothing it granted reaches a topic created under it later.

Every deployment prefix gets ACLs when its topics are made (`ensure_topics`). Deleting only its topics
left those rules on the broker, so a topic created again under the same name was open to every principal
as before, whoever created it and whatever rights its new owner meant to give (tests and benchmarks left
~54 rules a run that way). The attacker is the `agent` principal writing a task on such a topic.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import TopicAuthorizationFailedError
from aiokafka.protocol.admin import DescribeAclsRequest

from servicekit import ADMIN, KitSettings, drop_prefix, ensure_topics, kafka_options, stale_rights
from servicekit.bus_admin import grant_rights, granted_prefixes
from servicekit.bus_rights import Pattern, Resource
from tests.conftest import delete_prefix_topics
from tests.security.test_bus_rights import write

pytestmark = [pytest.mark.integration, pytest.mark.alone]  # `stale_rights` reads every prefix's rights


def run_prefixes(n: int) -> list[str]:
    run = uuid.uuid4().hex[:10]
    return [f"test-drop-{run}-{i}." for i in range(n)]


@pytest.fixture
async def admin(infra: Any) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap, **kafka_options(KitSettings(), ADMIN))
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def granted_once_settled(admin: AIOKafkaAdminClient, gone: str, timeout_s: float = 15.0) -> dict[str, list[str]]:
    """The prefixes holding rights, once the broker's authorizer shows `gone`'s revoked (it applies a change a moment after
    the controller commits it; under load, after a describe that still lists it). The caller then asserts on the answer."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    granted = await granted_prefixes(admin)
    while gone in granted and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
        granted = await granted_prefixes(admin)
    return granted


async def delete_topics_only(admin: AIOKafkaAdminClient, prefix: str) -> None:
    """What tests and benchmarks did before: the topics go, the rights stay."""
    await admin.delete_topics([t for t in await admin.list_topics() if t.startswith(prefix)])


async def test_a_topic_created_again_under_a_dropped_prefix_is_not_open_to_the_old_rights(infra: Any, admin: AIOKafkaAdminClient) -> None:
    kept, dropped = run_prefixes(2)
    try:
        for prefix in (kept, dropped):
            await ensure_topics(infra.kafka_bootstrap, prefix, ["control"])  # the prefix's rights, every catalog topic's
        await delete_topics_only(admin, kept)
        gone = await drop_prefix(infra.kafka_bootstrap, dropped)
        assert gone.topics == (dropped + "control",)
        assert gone.rights > 0
        for prefix in (kept, dropped):  # the admin makes a topic under each again, granting nothing this time
            await ensure_topics(infra.kafka_bootstrap, prefix, ["tasks"], grant=False)

        await write(KitSettings(kafka_bootstrap=infra.kafka_bootstrap, topic_prefix=kept), "agent", "tasks")  # the rights left behind
        with pytest.raises(TopicAuthorizationFailedError):
            await write(KitSettings(kafka_bootstrap=infra.kafka_bootstrap, topic_prefix=dropped), "agent", "tasks")
        granted = await granted_once_settled(admin, dropped)
        assert dropped not in granted
        assert kept in granted
    finally:
        for prefix in (kept, dropped):
            await delete_prefix_topics(infra.kafka_bootstrap, prefix)


async def test_drop_prefix_finds_the_tools_of_a_prefix_whose_topics_are_gone(infra: Any, admin: AIOKafkaAdminClient) -> None:
    (prefix,) = run_prefixes(1)
    try:
        await grant_rights(admin, prefix, ["update_inventory"])  # rights, a tool's among them, and no topic at all
        assert (await granted_prefixes(admin))[prefix] == ["update_inventory"]
        gone = await drop_prefix(infra.kafka_bootstrap, prefix)
        assert gone.topics == ()
        assert gone.rights > 0
        assert prefix not in await granted_once_settled(admin, prefix)
        rules_of_the_tool = DescribeAclsRequest(
            Resource.TOPIC, f"{prefix}tools.update_inventory.requests", Pattern.LITERAL, None, None, 1, 1
        )
        described = await admin._send_request(rules_of_the_tool)  # 1, 1: any operation, any permission
        assert not [r for r in described.resources if r[1].startswith(prefix)]
    finally:
        await delete_prefix_topics(infra.kafka_bootstrap, prefix)


async def test_pruning_revokes_the_rights_of_prefixes_without_topics_and_no_others(infra: Any, admin: AIOKafkaAdminClient) -> None:
    live, left, outer = run_prefixes(3)
    inner = outer + "eu."  # a live prefix under `outer`, which has rights and no topic of its own
    prefixes = (live, left, outer, inner)
    try:
        await ensure_topics(infra.kafka_bootstrap, live, ["control"])
        await ensure_topics(infra.kafka_bootstrap, left, ["control"])
        await delete_topics_only(admin, left)  # a run stopped before its cleanup
        await grant_rights(admin, outer)
        await ensure_topics(infra.kafka_bootstrap, inner, ["control"])

        listed = await stale_rights(infra.kafka_bootstrap)
        assert left in listed
        assert not {live, outer, inner} & listed.keys()
        assert left in await granted_prefixes(admin)  # listing revokes nothing

        await stale_rights(infra.kafka_bootstrap, revoke=True)
        granted = await granted_once_settled(admin, left)
        assert left not in granted
        assert {live, outer, inner} <= granted.keys()
    finally:
        for prefix in prefixes:
            await delete_prefix_topics(infra.kafka_bootstrap, prefix)
