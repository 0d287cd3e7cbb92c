"""The bus itself enforces least privilege: the attacker here is a plain aiokafka client on the real broker.

It holds some principal's valid password (a leaked agent key, a compromised tool service, a compromised
executor) or none, and tries what that principal must not do. Each refusal is paired with the owner
doing the same thing successfully, so a test cannot pass because the broker is simply unreachable.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from servicekit import ADMIN, OPS, KitSettings, catalog_topic_names, ensure_topics, kafka_options
from servicekit.bus_admin import (
    DIRECTORY_WRITERS,
    OUTSIDE_PRODUCE_BYTES_PER_S,
    ensure_principals,
    grant_rights,
    produce_quotas,
    produce_quotas_set,
)
from servicekit.bus_rights import PRINCIPALS, principal_names, rights_of, tool_principal
from tidegate.ops.sandbox import drop_sandbox, make_sandbox, sandbox_prefix

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


async def read_first(kit: KitSettings, principal: str, topic: str, *, timeout_s: float = 10.0) -> bytes | None:
    """The first record of partition 0 of `<prefix><topic>` as `principal` sees it, or None when nothing comes in `timeout_s`.

    The seek is inside the deadline: on a topic the principal may not describe, aiokafka's `seek_to_beginning`
    waits out the whole request timeout (40 s) for a leader the refused metadata never names.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=kit.kafka_bootstrap, enable_auto_commit=False, **login(kit, principal))
    await consumer.start()
    tp = TopicPartition(kit.topic_prefix + topic, 0)

    async def first() -> bytes | None:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        while True:
            batches = await consumer.getmany(tp, timeout_ms=500)
            for records in batches.values():
                if records:
                    value: bytes | None = records[0].value
                    return value

    try:
        async with asyncio.timeout(timeout_s):
            return await first()
    except (TimeoutError, TopicAuthorizationFailedError):
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


@pytest.mark.parametrize(
    ("principal", "topic"),
    [
        (principal, topic)
        for principal in ("executor", "planner", "audit")
        for topic in ("tasks", "actions.proposed", "tasks.outcomes")
        if topic not in rights_of(principal).writes
    ],
)
async def test_a_stolen_service_login_cannot_write_the_requests_and_outcomes_of_another(
    kit: KitSettings, principal: str, topic: str
) -> None:
    """bindattack: the executor's or the audit's login submits no task, proposes no call, reports no task's outcome; the planner's
    submits no task (only the agent's and the planner's logins write these, each signing as the client or the planner)."""
    with pytest.raises(TopicAuthorizationFailedError):
        await write(kit, principal, topic)
    await write(kit, "planner" if topic == "tasks.outcomes" else "agent", topic)


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


# --- sandboxes: `ops` makes, uses and drops them on its standing rights under `sandbox.`, and nothing more ---------


async def topic_names(kit: KitSettings, starting: str) -> set[str]:
    """The topics whose names start with `starting`, as `admin` sees them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN))
    await admin.start()
    try:
        return {t for t in await admin.list_topics() if t.startswith(starting)}
    finally:
        await admin.close()


async def create_as(kit: KitSettings, principal: str, prefix: str, names: list[str]) -> None:
    """Create topics `names` under `prefix` as `principal`, asking for no ACL; raises the broker's refusal."""
    await ensure_topics(kit.kafka_bootstrap, prefix, names, client_options=login(kit, principal), grant=False)


@pytest.fixture
async def sandbox(kit: KitSettings) -> AsyncIterator[KitSettings]:
    """`kit` on a sandbox prefix that `ops` made (every catalog topic), dropped by `ops` afterwards."""
    prefix = sandbox_prefix("test")
    await make_sandbox(kit, prefix, catalog_topic_names([TOOL]))
    try:
        yield kit.model_copy(update={"topic_prefix": prefix})
    finally:
        await drop_sandbox(kit, prefix)


async def test_ops_makes_uses_and_drops_a_sandbox_on_its_standing_rights(kit: KitSettings) -> None:
    prefix = sandbox_prefix("test")
    box = kit.model_copy(update={"topic_prefix": prefix})
    await create_as(kit, OPS, prefix, catalog_topic_names([TOOL]))
    try:
        assert await topic_names(kit, prefix) == {prefix + n for n in catalog_topic_names([TOOL])}
        for topic in ("actions.authorized", "approvals", "actions.results", "control", f"tools.{TOOL}.replies"):
            await write(box, OPS, topic)  # the sandbox's services, all logged in as ops
        assert await read_first(box, OPS, "actions.authorized") == b"{}"
        await join(box, OPS, "policy", "actions.proposed")
        await join(box, OPS, "executor", "actions.authorized")
    finally:
        await drop_sandbox(kit, prefix)
    assert await topic_names(kit, prefix) == set()


async def test_ops_cannot_create_acls(kit: KitSettings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, **login(kit, OPS))
    await admin.start()
    try:
        with pytest.raises(ClusterAuthorizationFailedError):
            await grant_rights(admin, kit.topic_prefix)  # would give it (and everyone) this prefix's rights
    finally:
        await admin.close()
    with pytest.raises(TopicAuthorizationFailedError):
        await write(kit, OPS, "actions.authorized")


@pytest.mark.parametrize("topic", ["actions.authorized", "approvals", "actions.results"])
async def test_ops_writes_no_authority_of_the_deployment(kit: KitSettings, topic: str) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        await write(kit, OPS, topic)
    await write(kit, OPS, "control")  # ...and its one topic still takes its writes


async def test_ops_creates_deletes_and_joins_nothing_outside_the_sandboxes(kit: KitSettings, sandbox: KitSettings) -> None:
    beside = f"sandboxes-{uuid.uuid4().hex[:8]}."  # a string prefix of ours is not "sandbox." + something
    new_topic = "tools.brand_new.requests"  # a catalog name no prefix has yet
    for prefix in (kit.topic_prefix, f"replay-{uuid.uuid4().hex[:8]}.", beside):
        with pytest.raises(TopicAuthorizationFailedError):
            await create_as(kit, OPS, prefix, [new_topic])
        assert await topic_names(kit, prefix + new_topic) == set()
    await create_as(kit, OPS, sandbox.topic_prefix, [new_topic])
    admin = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, **login(kit, OPS))
    await admin.start()
    try:
        response: Any = await admin.delete_topics([kit.topic_prefix + "tasks", sandbox.topic_prefix + "tasks"])
    finally:
        await admin.close()
    codes = dict(response.topic_error_codes)
    assert codes == {kit.topic_prefix + "tasks": TopicAuthorizationFailedError.errno, sandbox.topic_prefix + "tasks": 0}
    assert kit.topic_prefix + "tasks" in await topic_names(kit, kit.topic_prefix)
    with pytest.raises(GroupAuthorizationFailedError):
        await join(kit, OPS, "policy", "actions.proposed")
    await join(sandbox, OPS, "policy", "actions.proposed")


@pytest.mark.parametrize("principal", ["agent", "policy", tool_principal(TOOL)])
async def test_no_one_but_ops_makes_reads_or_writes_a_sandbox(kit: KitSettings, sandbox: KitSettings, principal: str) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        await create_as(kit, principal, sandbox_prefix("test"), ["tasks"])
    with pytest.raises(TopicAuthorizationFailedError):
        await write(sandbox, principal, "tasks")
    await write(sandbox, OPS, "tasks")
    assert await read_first(sandbox, principal, "tasks", timeout_s=3.0) is None
    assert await read_first(sandbox, OPS, "tasks") == b"{}"


@pytest.mark.alone  # sets and lifts the agent's quota, which every test shares
async def test_outside_principals_produce_under_a_quota_they_cannot_lift(kit: KitSettings) -> None:
    """A leaked or runaway agent login (or a tool service's) cannot fill the bus, and the audit log that keeps every record,
    at broker speed: `ensure_topics` gives each outside principal a produce quota, and that principal cannot lift it.

    A quota is the broker's, per principal, whatever the prefix (other sessions set the agent's at the same time): the
    exact figure is checked on a tool of this test's own."""
    tool = f"quota_{uuid.uuid4().hex[:8]}"
    await ensure_topics(kit.kafka_bootstrap, kit.topic_prefix, catalog_topic_names([tool]), produce_bytes_per_s=3 * 1024 * 1024)
    await ensure_principals(kit.kafka_bootstrap, kit.kafka_credentials_dir, [tool])
    admin = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, **login(kit, ADMIN))
    await admin.start()
    try:
        quotas = await produce_quotas_set(admin)
        assert quotas[tool_principal(tool)] == 3 * 1024 * 1024
        assert quotas["agent"] > 0
        # the platform's own principals are not slowed down, but for the writer of `directory`, kept forever and read whole at
        # every start, held to a quota of its own (tests/security/test_directory_quota.py)
        assert {p for p in quotas if p in SERVICES} == set(DIRECTORY_WRITERS)
    finally:
        await admin.close()

    for principal in ("agent", tool_principal(tool)):
        attacker = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, request_timeout_ms=10000, **login(kit, principal))
        await attacker.start()
        try:
            with pytest.raises(ClusterAuthorizationFailedError):
                await produce_quotas(attacker, {principal: None})
        finally:
            await attacker.close()

    await ensure_topics(kit.kafka_bootstrap, kit.topic_prefix, catalog_topic_names([tool]), produce_bytes_per_s=0)  # 0: none
    admin = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, **login(kit, ADMIN))
    await admin.start()
    try:
        assert tool_principal(tool) not in await produce_quotas_set(admin)
    finally:
        await produce_quotas(admin, {"agent": OUTSIDE_PRODUCE_BYTES_PER_S})  # as every other session leaves it
        await admin.close()
