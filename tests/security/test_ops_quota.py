"""Whoever holds only `ops.properties` (no operator key) cannot append junk to `control` at broker speed (reviewer F6).

`control` is kept forever and read from the start by every service before it serves; every unsigned record on it is
dead-lettered, never deleted. Without a quota on `ops`, a plain aiokafka producer with that login appended 100,000
records in 3 s (34,500 a second, 7 MB/s). `ensure_topics` (what `infra up` and `tidegate topics ensure` run) now gives
`ops` a produce quota of its own (`TIDEGATE_KAFKA_OPS_PRODUCE_BYTES_PER_S`), which the broker holds it to and which
`ops` cannot lift. The attacker here is that producer, on the real broker.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import ClusterAuthorizationFailedError

from servicekit import ADMIN, OPS, KitSettings, catalog_topic_names, ensure_topics, kafka_options
from servicekit.bus_admin import OPS_PRODUCE_BYTES_PER_S, produce_quotas, produce_quotas_set
from tests.conftest import eventually

pytestmark = pytest.mark.alone  # sets quotas of principals every test shares: beside no other test

RATE = 64 * 1024  # this test's quota for `ops`: small, so that a few seconds show it
JUNK = 16 * RATE  # 16 s of quota; Kafka measures a rate over a window of ~10 s, so at least ~6 s of it is waited out
RECORD = b'{"type":"tidegate.control.killswitch","junk":"' + b"x" * 900 + b'"}'


async def ops_quota_is(admin: AIOKafkaAdminClient, expected: float | None) -> bool:
    """Whether the broker holds `ops` to `expected` bytes a second (None: to no quota) now."""
    return (await produce_quotas_set(admin)).get(OPS) == expected


async def append_junk(kit: KitSettings, principal: str, total: int, topic: str = "control", record: bytes = RECORD) -> float:
    """Append `total` bytes of unsigned records to `<prefix><topic>` as `principal`, as fast as the broker lets it; seconds taken."""
    producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, linger_ms=5, **kafka_options(kit, principal))
    await producer.start()
    try:
        started = time.monotonic()
        sent = [await producer.send(kit.topic_prefix + topic, record, key=b"junk") for _ in range(total // len(record))]
        await asyncio.gather(*sent)
        return time.monotonic() - started
    finally:
        await producer.stop()


async def test_the_ops_login_alone_appends_to_control_under_a_quota_it_cannot_lift(kit: KitSettings) -> None:
    await ensure_topics(kit.kafka_bootstrap, kit.topic_prefix, catalog_topic_names(), ops_produce_bytes_per_s=RATE)
    admin = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN))
    await admin.start()
    try:
        await eventually(lambda: ops_quota_is(admin, RATE), what="ops's quota")  # the broker applies what its controller committed

        attacker = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, request_timeout_ms=10000, **kafka_options(kit, OPS))
        await attacker.start()
        try:
            with pytest.raises(ClusterAuthorizationFailedError):
                await produce_quotas(attacker, {OPS: None})
        finally:
            await attacker.close()

        took = await append_junk(kit, OPS, JUNK)
        assert took >= 4.0, f"{JUNK} bytes appended as ops in {took:.1f}s: the broker did not hold ops to {RATE} B/s"
    finally:
        await produce_quotas(admin, {OPS: OPS_PRODUCE_BYTES_PER_S})  # as `infra up` leaves it
        await admin.close()


async def test_a_quota_of_zero_removes_it(kit: KitSettings) -> None:
    await ensure_topics(kit.kafka_bootstrap, kit.topic_prefix, catalog_topic_names(), ops_produce_bytes_per_s=0)
    admin = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN))
    await admin.start()
    try:
        await eventually(lambda: ops_quota_is(admin, None), what="ops without a quota")
    finally:
        await produce_quotas(admin, {OPS: OPS_PRODUCE_BYTES_PER_S})
        await admin.close()
