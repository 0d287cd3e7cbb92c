"""Whoever holds only the approval service's Kafka password (no signing key) cannot append junk to `directory` at broker speed.

`directory` is kept forever and read whole by the policy and every approval copy before they serve; every unsigned record
on it is dead-lettered again at each start, never deleted. `ops`, the writer of `control`, produced under a quota, but the
`approval` login, the writer of `directory`, under none: a plain aiokafka producer with it appended 50,000 records in
1.2 s, and the next start of the policy and the approval service took 3 minutes. `ensure_topics` (what `infra up` and
`tidegate topics ensure` run) now gives it a quota of its own (`TIDEGATE_KAFKA_APPROVAL_PRODUCE_BYTES_PER_S`), which the
broker holds it to and which it cannot lift. The attacker here is that producer, on the real broker.
"""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import ClusterAuthorizationFailedError

from servicekit import ADMIN, KitSettings, catalog_topic_names, ensure_topics, kafka_options
from servicekit.bus_admin import APPROVAL_PRODUCE_BYTES_PER_S, DIRECTORY_WRITERS, produce_quotas, produce_quotas_set
from servicekit.bus_rights import PRINCIPALS
from tests.conftest import eventually
from tests.security.test_ops_quota import append_junk

pytestmark = pytest.mark.alone  # sets quotas of principals every test shares: beside no other test

APPROVAL = "approval"
RATE = 64 * 1024  # this test's quota: small, so that a few seconds show it
JUNK = 16 * RATE  # 16 s of quota; Kafka measures a rate over a window of ~10 s, so at least ~6 s of it is waited out
RECORD = b'{"type":"tidegate.directory.endpoint","junk":"' + b"x" * 900 + b'"}'


async def approval_quota_is(admin: AIOKafkaAdminClient, expected: float | None) -> bool:
    return (await produce_quotas_set(admin)).get(APPROVAL) == expected


def test_every_writer_of_an_authority_topic_but_admin_is_given_a_quota() -> None:
    """A principal the table lets write `control` or `directory` (kept forever, read whole at every start) gets a quota."""
    writers = {p for p, rights in PRINCIPALS.items() if p != ADMIN and {"control", "directory"} & set(rights.writes)}
    assert writers == {"ops", *DIRECTORY_WRITERS}
    assert APPROVAL in DIRECTORY_WRITERS


async def test_the_approval_login_alone_appends_to_directory_under_a_quota_it_cannot_lift(kit: KitSettings) -> None:
    await ensure_topics(kit.kafka_bootstrap, kit.topic_prefix, catalog_topic_names(), approval_produce_bytes_per_s=RATE)
    admin = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN))
    await admin.start()
    try:
        await eventually(lambda: approval_quota_is(admin, RATE), what="approval's quota")  # applied once the controller committed it

        attacker = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, request_timeout_ms=10000, **kafka_options(kit, APPROVAL))
        await attacker.start()
        try:
            with pytest.raises(ClusterAuthorizationFailedError):
                await produce_quotas(attacker, {APPROVAL: None})
        finally:
            await attacker.close()

        took = await append_junk(kit, APPROVAL, JUNK, "directory", RECORD)
        assert took >= 4.0, f"{JUNK} bytes appended to directory as approval in {took:.1f}s: the broker did not hold it to {RATE} B/s"
    finally:
        await produce_quotas(admin, {APPROVAL: APPROVAL_PRODUCE_BYTES_PER_S})  # as `infra up` leaves it
        await admin.close()


async def test_ensure_gives_approval_its_default_quota_and_zero_removes_it(kit: KitSettings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN))
    await admin.start()
    try:
        await ensure_topics(kit.kafka_bootstrap, kit.topic_prefix, catalog_topic_names())
        await eventually(lambda: approval_quota_is(admin, APPROVAL_PRODUCE_BYTES_PER_S), what="approval's default quota")
        await ensure_topics(kit.kafka_bootstrap, kit.topic_prefix, catalog_topic_names(), approval_produce_bytes_per_s=0)
        await eventually(lambda: approval_quota_is(admin, None), what="approval without a quota")
    finally:
        await produce_quotas(admin, {APPROVAL: APPROVAL_PRODUCE_BYTES_PER_S})
        await admin.close()
