"""Whoever holds a service's Kafka password (the planner's here) fills `deadletter`, which the audit keeps, at broker speed.

The services' principals write their own topics and `deadletter` under no quota by default (their output follows the load
admitted, which differs by deployment): a plain producer with the planner's login wrote 20,000 records of 1 KB to
`deadletter` in 0.8 s. A deployment that sets `TIDEGATE_KAFKA_SERVICES_PRODUCE_BYTES_PER_S` has `ensure_topics` (what
`infra up` and `tidegate topics ensure` run) give each of planner, policy, executor and audit that quota, which the broker
holds them to and which they cannot lift; unset, `ensure` leaves their quotas as they are. The attacker is that producer,
on the real broker.
"""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import ClusterAuthorizationFailedError

from servicekit import ADMIN, KitSettings, catalog_topic_names, ensure_topics, kafka_options
from servicekit.bus_admin import PLATFORM_PRINCIPALS, produce_quotas, produce_quotas_set
from tests.conftest import eventually
from tests.security.test_ops_quota import append_junk

pytestmark = pytest.mark.alone  # sets quotas of principals every test shares: beside no other test

RATE = 64 * 1024
JUNK = 16 * RATE  # 16 s of quota; Kafka measures a rate over a window of ~10 s, so at least ~6 s of it is waited out
RECORD = b'{"type":"tidegate.event.rejected","junk":"' + b"x" * 900 + b'"}'


async def quotas_are(admin: AIOKafkaAdminClient, expected: float | None) -> bool:
    held = await produce_quotas_set(admin)
    return all(held.get(p) == expected for p in PLATFORM_PRINCIPALS)


async def test_a_services_login_fills_deadletter_under_the_quota_the_deployment_sets_and_cannot_lift_it(kit: KitSettings) -> None:
    assert set(PLATFORM_PRINCIPALS) == {"planner", "policy", "executor", "audit"}
    admin = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN))
    await admin.start()
    try:
        await ensure_topics(kit.kafka_bootstrap, kit.topic_prefix, catalog_topic_names(), services_produce_bytes_per_s=RATE)
        await eventually(lambda: quotas_are(admin, RATE), what="the services' quotas")

        attacker = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, request_timeout_ms=10000, **kafka_options(kit, "planner"))
        await attacker.start()
        try:
            with pytest.raises(ClusterAuthorizationFailedError):
                await produce_quotas(attacker, {"planner": None})
        finally:
            await attacker.close()

        took = await append_junk(kit, "planner", JUNK, "deadletter", RECORD)
        assert took >= 4.0, f"{JUNK} bytes appended to deadletter as planner in {took:.1f}s: the broker did not hold it to {RATE} B/s"

        await ensure_topics(kit.kafka_bootstrap, kit.topic_prefix, catalog_topic_names())  # unset: left as they are
        assert await quotas_are(admin, RATE)
        await ensure_topics(kit.kafka_bootstrap, kit.topic_prefix, catalog_topic_names(), services_produce_bytes_per_s=0)
        await eventually(lambda: quotas_are(admin, None), what="the services' quotas removed")
    finally:
        await produce_quotas(admin, dict.fromkeys(PLATFORM_PRINCIPALS))  # none, as `infra up` leaves them
        await admin.close()
