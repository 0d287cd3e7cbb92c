"""An attacker signs with a copy of a key retired long ago: every service refuses it, and so does the audit log.

The live services refuse what a retired key signs once `TIDEGATE_RETIRED_KEY_GRACE_S` has passed since its
retirement (`signer_retired`). The audit log and replay read history: they used to accept every retired key
forever, so the forgery was stored as verifying, and misled whoever read the log later. They now judge the
grace at the time the broker appended the record, which the key's holder cannot choose: every topic is stamped
by the broker (`LogAppendTime`), aligned by `tidegate infra up` on a deployment that predates it.

The retirement times are set as `tidegate keys rotate` writes them, one an hour ago: no test waits for a grace to run out.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from bus_helpers import Collector

import schemas as s
from schemas.examples import sample_events
from servicekit import (
    ADMIN,
    KitSettings,
    SigningKey,
    catalog_topic_names,
    deployment_authority,
    drop_prefix,
    ensure_topics,
    kafka_options,
    service_key,
    sign_event,
)
from servicekit.authority import LOG_APPEND_TIME, appended_ms
from servicekit.signing import rotate
from servicekit.topics_admin import replication_factor
from services.audit.app import build as build_audit
from services.audit.settings import AuditSettings
from services.planner.app import build as build_planner
from tidegate.ops.recorded import read_audit_window, read_window, recorded_window

GRACE_S = 60.0  # short, and still far longer than a record takes to reach the broker after the rotation below


@pytest.fixture
def grace_kit(kit: KitSettings) -> KitSettings:
    return kit.model_copy(update={"retired_key_grace_s": GRACE_S})


def copy_of(key: SigningKey) -> SigningKey:
    """A copy of `key`'s private key, as someone who took it has it (it does not follow the key file to the next key)."""
    return SigningKey(key.name, key.private)


def decision(task: str) -> s.ActionDecided:
    """A policy decision of `task` (the contract's sample), which the planner consumes."""
    sample = dict(sample_events())["actions.decided"]
    assert isinstance(sample, s.ActionDecided)
    return sample.model_copy(update={"id": str(uuid.uuid4()), "subject": task, "data": sample.data.model_copy(update={"task_id": task})})


@pytest.fixture
async def attacker(grace_kit: KitSettings) -> AsyncIterator[AIOKafkaProducer]:
    """An insider with broker access: writes any bytes to any topic."""
    producer = AIOKafkaProducer(bootstrap_servers=grace_kit.kafka_bootstrap, acks="all", **kafka_options(grace_kit, ADMIN))
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def logged(kit: KitSettings, event_id: str) -> asyncpg.Record | None:
    conn = await asyncpg.connect(kit.database_url)
    try:
        return await conn.fetchrow("SELECT valid, invalid_reason, ts_type FROM audit.log WHERE event_id = $1", event_id)
    except asyncpg.UndefinedTableError:  # not migrated yet
        return None
    finally:
        await conn.close()


async def test_a_long_retired_key_verifies_nowhere_not_even_in_the_audit_log(
    grace_kit: KitSettings, attacker: AIOKafkaProducer, wait_for: Any
) -> None:
    kit = grace_kit
    stolen = copy_of(service_key(kit, "policy"))  # the attacker kept a copy of the policy service's key ...
    rotate(kit.keys_dir, "policy", now=datetime.now(UTC) - timedelta(hours=1))  # ... retired an hour ago
    in_flight_key = copy_of(service_key(kit, "policy"))  # the key after it, retired just now: its grace runs for GRACE_S
    rotate(kit.keys_dir, "policy")
    task = f"t-{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC) - timedelta(seconds=1)

    planner = build_planner(kit)  # a live consumer of actions.decided
    audit = build_audit(kit, AuditSettings(batch_max_records=500, checkpoint_interval_s=0.3, topic_discovery_ms=2000))
    deadletter = Collector(kit, ["deadletter"])
    for part in (planner, audit, deadletter):
        await part.start()
    try:
        in_flight = sign_event(decision(task), in_flight_key)  # a genuine decision still on its way when the key was rotated
        forged = sign_event(decision(task), stolen)
        for event in (in_flight, forged):  # one partition (one task): the live consumer handles them in this order
            await attacker.send_and_wait(kit.topic_prefix + "actions.decided", s.encode(event), key=event.key)

        refused = await wait_for(lambda: deadletter.rejected(forged.id), timeout=60, what="the forgery dead-lettered by the planner")
        assert [(d.data.code, d.source) for d in refused] == [("signer_retired", "tidegate/planner")]
        assert not deadletter.rejected(in_flight.id)  # handled before the forgery, and not refused

        forged_row = await wait_for(lambda: logged(kit, forged.id), timeout=60, what="the forgery in the audit log")
        kept_row = await wait_for(lambda: logged(kit, in_flight.id), timeout=60, what="the in-flight decision in the audit log")
    finally:
        for part in (deadletter, audit, planner):
            await part.stop()
    assert not forged_row["valid"]
    assert forged_row["invalid_reason"] == f"signer_retired: key {stolen.key_id} was retired, and signs nothing new"
    assert forged_row["ts_type"] == LOG_APPEND_TIME  # the broker's time is stored with the row, and hashed with it
    assert (kept_row["valid"], kept_row["invalid_reason"], kept_row["ts_type"]) == (True, None, LOG_APPEND_TIME)

    # Replay and what-if reach the audit's verdict, from the log or from the topics; and so they do once the grace ran out.
    end = datetime.now(UTC) + timedelta(seconds=1)
    from_log = await read_audit_window(kit.database_url, kit.topic_prefix, start, end)
    on_bus = await recorded_window(kit, start, end, principal=ADMIN, topics=["actions.decided"])
    a_year_on = deployment_authority(kit, history=True)
    a_year_on.clock = lambda: time.time() + 365 * 86_400
    later = await read_window(
        kit.kafka_bootstrap, kit.topic_prefix, start, end, authority=a_year_on, topics=["actions.decided"],
        client_options=kafka_options(kit, ADMIN),
    )  # fmt: skip
    for window in (from_log, on_bus, later):
        assert [r.event.id for r in window.events if r.event.data.task_id == task] == [in_flight.id]
        assert dict(window.skipped.counts) == {"signer_retired": 1}


async def test_infra_up_turns_a_topic_its_producers_stamped_into_one_the_broker_stamps(
    infra: Any, prefix: str, wait_for: Any, tmp_path: Any
) -> None:
    """A deployment from before: `actions.decided` stamped by its producers, whose timestamps the signer chooses."""
    kit = KitSettings(kafka_bootstrap=infra.kafka_bootstrap, topic_prefix=prefix, keys_dir=tmp_path / "keys")
    admin = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN))
    await admin.start()
    topic = prefix + "actions.decided"
    try:
        replicas = replication_factor(len((await admin.describe_cluster())["brokers"]))
        month = str(30 * 86_400_000)  # the team's own retention, longer than the catalog's 7 days: theirs to keep
        old = {"message.timestamp.type": "CreateTime", "retention.ms": month}
        await admin.create_topics([NewTopic(topic, 1, replicas, topic_configs=old)])
        await wait_for(lambda: timestamp_type(admin, topic, "CreateTime"), what="the old topic")
        await ensure_topics(kit.kafka_bootstrap, prefix, catalog_topic_names())  # what `tidegate infra up` runs
        await wait_for(lambda: timestamp_type(admin, topic, "LogAppendTime"), what="the topic stamped by the broker")
        described: Any = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, {"retention.ms": None})])
        assert described[0].resources[0][4][0][1] == month  # the upgrade restamped the topic and kept the team's setting
        # The time a producer chooses is replaced by the broker's, and consumers read it as the broker's.
        chosen = 1_000_000_000_000  # 2001: a time the key's holder would like its record judged at
        producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, acks="all", **kafka_options(kit, ADMIN))
        await producer.start()
        try:
            sent = await producer.send_and_wait(topic, b"{}", timestamp_ms=chosen)
        finally:
            await producer.stop()
        record = await read_one(kit, topic, sent.offset)
        assert record.timestamp_type == LOG_APPEND_TIME
        assert appended_ms(record) == record.timestamp != chosen
    finally:
        await admin.close()
        await drop_prefix(kit.kafka_bootstrap, prefix)


async def timestamp_type(admin: AIOKafkaAdminClient, topic: str, wanted: str) -> bool:
    described: Any = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, {"message.timestamp.type": None})])
    entries = described[0].resources[0][4]  # none while the topic is not there yet
    return bool(entries) and entries[0][1] == wanted


async def read_one(kit: KitSettings, topic: str, offset: int) -> Any:
    consumer = AIOKafkaConsumer(bootstrap_servers=kit.kafka_bootstrap, enable_auto_commit=False, **kafka_options(kit, ADMIN))
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        return await consumer.getone()
    finally:
        await consumer.stop()
