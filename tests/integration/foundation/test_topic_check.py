"""`tidegate topics check` shows each topic as the broker holds it beside the catalog, on the real broker; it changes nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from typer.testing import CliRunner

from servicekit import ADMIN, OPS, TopicCheck, check_topics, drop_prefix, ensure_topics, kafka_options
from servicekit.bus_admin import APPROVAL_PRODUCE_BYTES_PER_S, produce_quotas, produce_quotas_set
from servicekit.settings import KitSettings
from servicekit.topics_admin import CROWDED_RECORDS, replication_factor
from tests.conftest import eventually
from tidegate.cli import app

MONTH = str(30 * 86_400_000)
NAMES = ["tasks", "control", "actions.results"]


@pytest.fixture
async def older(infra: Any, prefix: str) -> AsyncIterator[str]:
    """A prefix as an older release left it: `tasks` stamped by producers (CreateTime) with the team's own month of retention,
    `control` as the catalog asks, `actions.results` not created at all."""
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap, **kafka_options(KitSettings(), ADMIN))
    await admin.start()
    try:
        replicas = replication_factor(len((await admin.describe_cluster())["brokers"]))
        old = {"message.timestamp.type": "CreateTime", "retention.ms": MONTH}
        await admin.create_topics([NewTopic(prefix + "tasks", 2, replicas, topic_configs=old)])
    finally:
        await admin.close()
    await ensure_topics(infra.kafka_bootstrap, prefix, ["control"], grant=False)
    yield prefix
    await drop_prefix(infra.kafka_bootstrap, prefix)


async def test_an_older_releases_topic_is_shown_not_aligned_and_a_missing_one_missing_until_ensure(infra: Any, older: str) -> None:
    before = {c.topic.removeprefix(older): c for c in await check_topics(infra.kafka_bootstrap, older, NAMES, partitions=6)}
    assert before["tasks"].misaligned == {"message.timestamp.type": ("CreateTime", "LogAppendTime")}
    assert before["tasks"].own == {"retention.ms": (MONTH, str(7 * 86_400_000)), "partitions": ("2", "6")}
    assert not before["tasks"].ok
    assert before["control"].ok
    assert before["control"].own == {}
    assert before["actions.results"].missing
    assert not before["actions.results"].ok

    await ensure_topics(infra.kafka_bootstrap, older, NAMES, partitions=6)  # what the checklist says to run

    after = {c.topic.removeprefix(older): c for c in await check_topics(infra.kafka_bootstrap, older, NAMES, partitions=6)}
    assert all(c.ok for c in after.values()), after
    assert after["tasks"].own == {"retention.ms": (MONTH, str(7 * 86_400_000)), "partitions": ("2", "6")}  # kept: the team's


async def test_the_command_exits_1_naming_what_ensure_mends_and_changes_nothing(infra: Any, older: str) -> None:
    env = {"TIDEGATE_KAFKA_BOOTSTRAP": infra.kafka_bootstrap, "TIDEGATE_TOPIC_PREFIX": older, "COLUMNS": "200"}
    result = await asyncio.to_thread(CliRunner().invoke, app, ["topics", "check"], env=env)  # the CLI runs its own event loop
    assert result.exit_code == 1, result.output
    assert "message.timestamp.type CreateTime → LogAppendTime" in result.stdout
    assert "`tidegate topics ensure`" in result.stdout

    as_json = await asyncio.to_thread(CliRunner().invoke, app, ["topics", "check", "--json"], env=env)
    shown = [json.loads(line) for line in as_json.stdout.splitlines()]
    tasks = next(t for t in shown if t["topic"] == older + "tasks")
    assert tasks["misaligned"] == {"message.timestamp.type": {"now": "CreateTime", "catalog": "LogAppendTime"}}
    # nothing was changed by looking
    again = {c.topic.removeprefix(older): c for c in await check_topics(infra.kafka_bootstrap, older, ["tasks", "actions.results"])}
    assert again["tasks"].config["message.timestamp.type"] == "CreateTime"
    assert again["actions.results"].missing


async def test_junk_appended_to_control_with_the_ops_login_is_counted_and_warned_of(infra: Any, older: str) -> None:
    """Whoever holds only `ops.properties` can append unsigned records to `control`, kept forever and read whole by every
    service at each start (reviewer F6): `topics check` counts what `control` holds and warns past `CROWDED_RECORDS`."""
    await ensure_topics(infra.kafka_bootstrap, older, ["control"])  # the prefix's rights, as `infra up` grants them
    before = {c.topic.removeprefix(older): c for c in await check_topics(infra.kafka_bootstrap, older, NAMES)}
    assert (before["control"].records, before["control"].crowded) == (0, False)
    assert before["tasks"].records is None  # only the topics read whole at start are counted

    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka_bootstrap, linger_ms=20, **kafka_options(KitSettings(), OPS))
    await producer.start()
    try:
        sent = [await producer.send(older + "control", b'{"junk":1}', key=b"junk") for _ in range(CROWDED_RECORDS + 1)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()

    after = {c.topic.removeprefix(older): c for c in await check_topics(infra.kafka_bootstrap, older, NAMES)}
    assert (after["control"].records, after["control"].crowded) == (CROWDED_RECORDS + 1, True)
    env = {"TIDEGATE_KAFKA_BOOTSTRAP": infra.kafka_bootstrap, "TIDEGATE_TOPIC_PREFIX": older, "COLUMNS": "400"}
    result = await asyncio.to_thread(CliRunner().invoke, app, ["topics", "check"], env=env)
    assert f"warning: {older}control holds 10,001 records, kept forever and read whole by every service" in result.stdout
    # what the operator does about it: whose login wrote it, rotate it, and let only the next start read it
    assert "Only the `ops` login (and `admin`) may write it, so junk there says its password is out" in result.stdout
    assert "`tidegate infra rotate-login ops --leaked`" in result.stdout
    assert "TIDEGATE_START_CHECKPOINTS=true" in result.stdout
    as_json = await asyncio.to_thread(CliRunner().invoke, app, ["topics", "check", "--json"], env=env)
    control = next(json.loads(line) for line in as_json.stdout.splitlines() if json.loads(line).get("topic") == older + "control")
    assert (control["records"], control["crowded"]) == (CROWDED_RECORDS + 1, True)


async def test_ensure_on_an_existing_cluster_says_what_it_changed_then_that_it_changed_nothing(infra: Any, older: str) -> None:
    """The operator runs `tidegate topics ensure` on a broker an older release (or a hand) left: it used to print only
    `created N topics (all existed)` while it restamped and un-compacted topics behind them. It names each topic it
    changed and how, keeps the topic's own settings, and run again says it changed nothing."""
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap, **kafka_options(KitSettings(), ADMIN))
    await admin.start()
    try:  # `control` compacted by hand, as a release before 2026-12 made it
        compacted = {"cleanup.policy": "compact", "retention.ms": "-1", "message.timestamp.type": "LogAppendTime"}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, older + "control", compacted)])
    finally:
        await admin.close()
    env = {"TIDEGATE_KAFKA_BOOTSTRAP": infra.kafka_bootstrap, "TIDEGATE_TOPIC_PREFIX": older, "COLUMNS": "400"}

    first = await asyncio.to_thread(CliRunner().invoke, app, ["topics", "ensure"], env=env)
    assert first.exit_code == 0, first.output
    assert f"aligned {older}control: cleanup.policy compact → delete (its own other settings kept)" in first.stdout
    assert f"aligned {older}tasks: message.timestamp.type CreateTime → LogAppendTime (its own other settings kept)" in first.stdout
    assert f"{older}actions.results" in first.stdout.split("\n")[0]  # created, and named

    async def aligned() -> dict[str, TopicCheck] | None:  # the broker serves what its controller committed a moment later
        checks = {c.topic.removeprefix(older): c for c in await check_topics(infra.kafka_bootstrap, older, NAMES, partitions=6)}
        return checks if all(c.ok for c in checks.values()) else None

    after = await eventually(aligned, what="the topics as the catalog asks")
    assert after["tasks"].own["retention.ms"] == (MONTH, str(7 * 86_400_000))  # the team's own retention, kept

    again = await asyncio.to_thread(CliRunner().invoke, app, ["topics", "ensure"], env=env)
    assert again.exit_code == 0, again.output
    assert "created 0 topics (all existed)" in again.stdout
    assert "aligned" not in again.stdout
    assert "changed no existing topic's configs" in again.stdout


@pytest.mark.alone  # sets the approval principal's quota, which every test shares
async def test_ensure_names_each_produce_quota_it_changes(infra: Any, older: str) -> None:
    """A quota setting changed (`TIDEGATE_KAFKA_APPROVAL_PRODUCE_BYTES_PER_S`) is what `ensure` says it set, was and now;
    run again with the same settings it says it changed none. Quotas are the broker's, whatever the prefix: put back after."""
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap, **kafka_options(KitSettings(), ADMIN))
    await admin.start()
    env = {"TIDEGATE_KAFKA_BOOTSTRAP": infra.kafka_bootstrap, "TIDEGATE_TOPIC_PREFIX": older, "COLUMNS": "400"}

    async def ensure(**settings: str) -> str:
        result = await asyncio.to_thread(CliRunner().invoke, app, ["topics", "ensure"], env=env | settings)
        assert result.exit_code == 0, result.output
        return result.stdout

    async def approval_held(rate: float) -> bool:  # the broker serves what its controller committed a moment later
        return (await produce_quotas_set(admin)).get("approval") == rate

    try:
        await ensure()
        await eventually(lambda: approval_held(APPROVAL_PRODUCE_BYTES_PER_S), what="approval's default quota")
        raised = await ensure(TIDEGATE_KAFKA_APPROVAL_PRODUCE_BYTES_PER_S="2097152")
        assert "produce quota of approval: 1048576 B/s → 2097152 B/s" in raised
        await eventually(lambda: approval_held(2097152), what="approval's raised quota")
        back = await ensure()
        assert "produce quota of approval: 2097152 B/s → 1048576 B/s" in back
        await eventually(lambda: approval_held(APPROVAL_PRODUCE_BYTES_PER_S), what="approval's default quota again")
        assert "changed no produce quota" in await ensure()
    finally:
        await produce_quotas(admin, {"approval": APPROVAL_PRODUCE_BYTES_PER_S})
        await admin.close()


@pytest.mark.alone  # sets the approval principal's quota, which every test shares
async def test_check_names_the_produce_quota_ensure_will_set_on_a_broker_an_older_release_left(infra: Any, older: str) -> None:
    """The upgrade probe (upgrade21 F5): before upgrading to release 20, `topics check` said "all 13 topics are on the
    broker as the catalog asks", then `ensure` set `produce quota of approval: none → 1048576 B/s`, the one change note
    20 asks for. The check now says it before, and that nothing is left after. Quotas are the broker's: put back after."""
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap, **kafka_options(KitSettings(), ADMIN))
    await admin.start()
    env = {"TIDEGATE_KAFKA_BOOTSTRAP": infra.kafka_bootstrap, "TIDEGATE_TOPIC_PREFIX": older, "COLUMNS": "400"}

    async def cli(*args: str) -> str:
        result = await asyncio.to_thread(CliRunner().invoke, app, ["topics", *args], env=env)
        return result.stdout

    async def approval_held(rate: float | None) -> bool:
        return (await produce_quotas_set(admin)).get("approval") == rate

    try:
        await produce_quotas(admin, {"approval": None})  # as release 19's `infra up` left the broker
        await eventually(lambda: approval_held(None), what="approval without a quota")
        before = await cli("check")
        assert "produce quota of approval: none → 1048576 B/s" in before, before
        assert "`tidegate topics ensure` sets them" in before
        as_json = [json.loads(line) for line in (await cli("check", "--json")).splitlines() if line.startswith("{")]
        assert {"quota": "approval", "now": None, "settings": APPROVAL_PRODUCE_BYTES_PER_S} in as_json
        await cli("ensure")
        await eventually(lambda: approval_held(APPROVAL_PRODUCE_BYTES_PER_S), what="approval's quota set")
        after = await cli("check")
        assert "every produce quota is as the settings say" in after, after
        assert "produce quota of approval" not in after
    finally:
        await produce_quotas(admin, {"approval": APPROVAL_PRODUCE_BYTES_PER_S})
        await admin.close()
