"""`verify --content` on a live deployment names forged rows only, not rows of records the bus took while it compared.

A second red team ran it while agents worked: 20 genuine rows read "the bus never had this offset (its partition ends
at 0): a row the audit service did not write", exit 1, worded as a forgery is: the ends were read at its start, the
rows later, and the audit had recorded what arrived meanwhile. Real Kafka and PostgreSQL; the ends it reads first are
made stale as a busy deployment makes them.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from audit_cli_helpers import bus_records

from servicekit import ADMIN, KitSettings, kafka_options
from servicekit.dbroles import service_database_url
from services.audit import content
from services.audit.handlers import Recorder
from services.audit.records import observe
from services.audit.repository import PostgresAuditLog

pytestmark = pytest.mark.integration


async def test_rows_recorded_after_the_ends_were_read_are_compared_and_a_forged_one_is_still_named(
    kit: KitSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = kit.topic_prefix + "actions.results"
    producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for n in range(5):
            await producer.send_and_wait(topic, b'{"genuine": %d}' % n, partition=0)
    finally:
        await producer.stop()
    records = await bus_records(kit, topic)
    log = await PostgresAuditLog.connect(service_database_url(kit, "audit"), max_size=1)
    try:
        await Recorder(prefix=kit.topic_prefix, log=log).record_batch(records)  # the audit recorded all five, genuinely

        real = content.bus_offsets

        async def read_while_two_more_were_arriving(*args: Any, **kwargs: Any) -> Any:
            held = await real(*args, **kwargs)
            return {tp: (begin, end - 2) if tp == (topic, 0) else (begin, end) for tp, (begin, end) in held.items()}

        monkeypatch.setattr(content, "bus_offsets", read_while_two_more_were_arriving)
        report = await content.check_content(log, kit.kafka_bootstrap, kit.topic_prefix, client_options=kafka_options(kit, ADMIN))
        assert [m.describe() for m in report.mismatches] == []

        forged = observe(
            topic=topic, partition=0, offset=1000, timestamp_ms=1_790_000_000_000, timestamp_type=1, key=None,
            value=b'{"forged": true}', headers=[], prefix=kit.topic_prefix,
        )  # fmt: skip
        await log.append([forged])  # the audit's login: a row past anything the bus ever had
        report = await content.check_content(log, kit.kafka_bootstrap, kit.topic_prefix, client_options=kafka_options(kit, ADMIN))
        assert [(m.offset, "the bus never had this offset" in m.problem) for m in report.mismatches] == [(1000, True)]
    finally:
        await log.close()
