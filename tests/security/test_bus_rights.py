"""The bus itself enforces least privilege: the attacker here is a plain aiokafka client on the real broker.

It holds some principal's valid password (a leaked agent key, a compromised tool service, a compromised
executor) or none, and tries what that principal must not do. Each refusal is paired with the owner
doing the same thing successfully, so a test cannot pass because the broker is simply unreachable.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import GroupAuthorizationFailedError, KafkaConnectionError, TopicAuthorizationFailedError

from servicekit import ADMIN, KitSettings, kafka_options
from servicekit.bus_rights import PRINCIPALS, principal_names, rights_of, tool_principal

TOOL = "update_inventory"  # served over Kafka in the default catalog, so test prefixes carry its topics
SERVICES = ["planner", "policy", "approval", "executor", "audit"]
GUARDED = {  # topic -> the only principal that may write it
    "actions.decided": "policy",
    "actions.authorized": "policy",
    "approvals": "approval",
    "control": "ops",
    "directory": "approval",  # tenants' directories, as their admins keep them over the approval service's API
    "actions.results": "executor",
    f"tools.{TOOL}.requests": "executor",
    f"tools.{TOOL}.replies": tool_principal(TOOL),
    "audit.checkpoints": "audit",
}


def login(kit: KitSettings, principal: str) -> dict[str, Any]:
    """SASL/SCRAM options of `principal`, read from its local credentials file (as an outside client would)."""
    options = kafka_options(kit, principal)
    assert options.get("sasl_plain_username") == principal, f"no credentials for {principal}: is the broker up with logins (infra up)?"
    return options


async def write(kit: KitSettings, principal: str | None, topic: str, *, password: str | None = None) -> None:
    """Produce one record on `<prefix><topic>` as `principal` (None: no login at all); raises what the broker says."""
    options = login(kit, principal) if principal else {}
    if password is not None:
        options["sasl_plain_password"] = password
    producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, request_timeout_ms=10000, **options)
    try:
        await producer.start()
        await asyncio.wait_for(producer.send_and_wait(kit.topic_prefix + topic, b"{}", key=b"attacker", partition=0), 20)
    finally:
        await producer.stop()


async def read_first(kit: KitSettings, principal: str, topic: str, *, timeout_s: float = 4.0) -> bytes | None:
    """The first record of partition 0 of `<prefix><topic>` as `principal` sees it, or None when nothing comes."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kit.kafka_bootstrap, enable_auto_commit=False, **login(kit, principal))
    await consumer.start()
    try:
        tp = TopicPartition(kit.topic_prefix + topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            batches = await consumer.getmany(tp, timeout_ms=500)
            for records in batches.values():
                if records:
                    value: bytes | None = records[0].value
                    return value
        return None
    except TopicAuthorizationFailedError:
        return None
    finally:
        await consumer.stop()


async def join(kit: KitSettings, principal: str, group: str, topic: str) -> None:
    """Join consumer group `<prefix><group>` on `topic` as `principal`; raises the broker's refusal."""
    consumer = AIOKafkaConsumer(
        kit.topic_prefix + topic, bootstrap_servers=kit.kafka_bootstrap, group_id=kit.topic_prefix + group, **login(kit, principal)
    )
    await consumer.start()
    try:
        await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
    finally:
        await consumer.stop()


async def test_a_client_without_credentials_is_refused(kit: KitSettings) -> None:
    with pytest.raises(KafkaConnectionError):
        await write(kit, None, "tasks")
    await write(kit, "agent", "tasks")  # the same write with the agent's login goes through


async def test_a_wrong_password_is_refused(kit: KitSettings) -> None:
    with pytest.raises(KafkaConnectionError):
        await write(kit, "agent", "tasks", password="not-" + uuid.uuid4().hex)
    with pytest.raises(KafkaConnectionError):
        await write(kit, "admin", "control", password="not-" + uuid.uuid4().hex)


@pytest.mark.parametrize("topic", ["actions.authorized", "approvals", "control", "actions.decided", "actions.results"])
async def test_an_agent_cannot_write_authority(kit: KitSettings, topic: str) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        await write(kit, "agent", topic)
    await write(kit, GUARDED[topic], topic)


async def test_an_agent_can_submit_and_propose(kit: KitSettings) -> None:
    await write(kit, "agent", "tasks")
    await write(kit, "agent", "actions.proposed")


@pytest.mark.parametrize("topic", sorted(GUARDED))
async def test_only_the_owner_writes_a_guarded_topic(kit: KitSettings, topic: str) -> None:
    for principal in principal_names([TOOL]):
        if principal in (ADMIN, GUARDED[topic]):
            continue
        with pytest.raises(TopicAuthorizationFailedError):
            await write(kit, principal, topic)
    await write(kit, GUARDED[topic], topic)


async def test_the_executor_cannot_authorize_itself(kit: KitSettings) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        await write(kit, "executor", "actions.authorized")


async def test_a_tool_service_cannot_read_authorizations(kit: KitSettings) -> None:
    await write(kit, "policy", "actions.authorized")  # a record is there to be read...
    assert await read_first(kit, "executor", "actions.authorized") == b"{}"  # ...by its consumer,
    assert await read_first(kit, tool_principal(TOOL), "actions.authorized", timeout_s=3.0) is None  # not by a tool


async def test_a_tool_service_reads_its_requests_and_writes_only_its_replies(kit: KitSettings) -> None:
    await write(kit, "executor", f"tools.{TOOL}.requests")
    assert await read_first(kit, tool_principal(TOOL), f"tools.{TOOL}.requests") == b"{}"
    await write(kit, tool_principal(TOOL), f"tools.{TOOL}.replies")
    for topic in ("actions.results", f"tools.{TOOL}.requests", "deadletter"):
        with pytest.raises(TopicAuthorizationFailedError):
            await write(kit, tool_principal(TOOL), topic)


async def test_a_tool_service_cannot_join_the_group_of_a_tool_whose_name_extends_its_own(kit: KitSettings) -> None:
    # `tool-update_inventory` in the group of `update_inventory_bulk`: it would take that tool's requests from its service.
    with pytest.raises(GroupAuthorizationFailedError):
        await join(kit, tool_principal(TOOL), f"tool-{TOOL}_bulk", f"tools.{TOOL}.requests")
    await join(kit, tool_principal(TOOL), f"tool-{TOOL}", f"tools.{TOOL}.requests")
    await join(kit, tool_principal(TOOL), f"tool-{TOOL}.replica", f"tools.{TOOL}.requests")


async def test_the_planner_cannot_join_the_policy_group(kit: KitSettings) -> None:
    with pytest.raises(GroupAuthorizationFailedError):
        await join(kit, "planner", "policy", "approvals")
    await join(kit, "planner", "planner", "approvals")


@pytest.mark.parametrize("principal", [*SERVICES, "ops", "agent"])
async def test_each_principal_can_do_what_it_needs(kit: KitSettings, principal: str) -> None:
    rights = rights_of(principal)
    for topic in rights.writes:
        await write(kit, principal, topic.replace("*", TOOL))
    for topic in rights.reads:
        name = "tasks" if topic == "*" else topic.replace("*", TOOL)
        await write(kit, ADMIN, name)
        assert await read_first(kit, principal, name) == b"{}", f"{principal} cannot read {name}"
    for group in rights.groups:
        await join(kit, principal, group.replace("*", "-cli"), rights.reads[0].replace("*", TOOL) if rights.reads[0] != "*" else "tasks")


def test_every_service_has_a_principal() -> None:
    assert set(SERVICES) <= set(PRINCIPALS)
