"""The audit's own database login forges rows ahead of the service: the genuine records are never dropped in silence.

The login may INSERT into `audit.log` (the service writes as it). A row of the attacker's content, correctly chained
at the next offset of a partition, used to make the service take the genuine record at that offset for one already
recorded, and drop it; every `verify` mode passed (outside review, round 3, F1). Now the genuine record is a conflict:
stored in `audit.conflicts` (which the login cannot change), logged at ERROR, counted, and named by `verify`. With the
service stopped, `verify --content` names the forged row against the bus, and `verify --signatures` names a row that
claims a signature its value does not carry.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from audit_cli_helpers import audit_cli, bus_records, offsets_logged, rows
from prometheus_client import REGISTRY

import schemas as s
from schemas.examples import sample_events
from servicekit import KitSettings
from servicekit.dbroles import service_database_url
from services.audit.app import build as build_audit
from services.audit.handlers import Recorder
from services.audit.records import observe
from services.audit.repository import PostgresAuditLog
from services.audit.rows import COLUMNS, GENESIS, LogRow, headers_json
from services.audit.settings import AuditSettings

pytestmark = pytest.mark.integration

SETTINGS = AuditSettings(batch_max_records=500, checkpoint_interval_s=0.3, topic_discovery_ms=2000)


def a_result_event() -> bytes:
    """A valid `actions.results` event (the contract's sample), unsigned: what the attacker can write, not sign."""
    event = next(e for topic, e in sample_events() if topic == "actions.results")
    return s.encode(event.model_copy(update={"id": str(uuid.uuid4())}))


async def forge(kit: KitSettings, topic: str, value: bytes, *, ahead: int = 1) -> int:
    """As the audit's own login: append a correctly chained row of `value`, marked a valid event, `ahead` offsets past the head."""
    conn = await asyncpg.connect(service_database_url(kit, "audit"))
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE tidegate_audit_writer")
            head = await conn.fetchrow(
                "SELECT seq, hash, kafka_offset FROM audit.log WHERE topic = $1 AND partition = 0 ORDER BY seq DESC LIMIT 1", topic
            )
            seq, prev, offset = (head["seq"], head["hash"], head["kafka_offset"]) if head else (0, GENESIS, -1)
            obs = observe(
                topic=topic, partition=0, offset=offset + ahead, timestamp_ms=int(datetime.now(UTC).timestamp() * 1000),
                timestamp_type=1, key=None, value=value, headers=[], prefix=kit.topic_prefix,
            )._replace(valid=True, invalid_reason=None)  # fmt: skip
            row = LogRow.link(obs, seq=seq + 1, prev_hash=prev, duplicate=False, recorded_at=datetime.now(UTC))
            values = list(row)
            values[COLUMNS.index("headers")] = headers_json(row.headers)
            await conn.copy_records_to_table("log", schema_name="audit", columns=COLUMNS, records=[tuple(values)])
            return offset + ahead
    finally:
        await conn.close()


async def test_rows_forged_ahead_while_the_service_is_stopped_are_caught_when_it_starts_again(
    kit: KitSettings, producer: AIOKafkaProducer, wait_for: Any
) -> None:
    """The service started after the log's last row, so rows forged ahead while it was down made it skip the genuine
    records at those offsets, unread: it now starts no later than the group's committed offset, which is in Kafka."""
    topic = kit.topic_prefix + "actions.results"
    audit = build_audit(kit, SETTINGS)
    await audit.start()
    try:
        await producer.send_and_wait(topic, json.dumps({"genuine": 0}).encode(), partition=0)
        await wait_for(lambda: offsets_logged(kit, topic, [0]), timeout=60, what="the first record logged")
    finally:
        await audit.stop()  # a graceful stop commits what it handled: the group's offset is 1
    assert await forge(kit, topic, a_result_event()) == 1
    assert await forge(kit, topic, a_result_event()) == 2
    for n in (1, 2, 3):
        await producer.send_and_wait(topic, json.dumps({"genuine": n}).encode(), partition=0)
    again = build_audit(kit, SETTINGS)
    await again.start()
    try:
        found = await wait_for(
            lambda: _conflicts_at(kit, topic, 2), timeout=60, what="the genuine records at the forged offsets found as conflicts"
        )
        await wait_for(lambda: offsets_logged(kit, topic, [0, 1, 2, 3]), timeout=60, what="the chain going on")
    finally:
        await again.stop()
    assert sorted(r["kafka_offset"] for r in found) == [1, 2]
    assert sorted(json.loads(r["value"])["genuine"] for r in found) == [1, 2]


async def _conflicts_at(kit: KitSettings, topic: str, count: int) -> list[asyncpg.Record] | None:
    found = await rows(kit, "SELECT * FROM audit.conflicts WHERE topic = $1", topic)
    return found if len(found) >= count else None


async def test_a_row_forged_at_the_next_offset_makes_the_genuine_record_a_recorded_logged_counted_conflict(
    kit: KitSettings, producer: AIOKafkaProducer, wait_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    topic = kit.topic_prefix + "actions.results"
    before = REGISTRY.get_sample_value("tidegate_audit_conflicts_total", {"topic": topic}) or 0.0
    audit = build_audit(kit, SETTINGS)
    await audit.start()
    try:
        with caplog.at_level(logging.ERROR, logger="services.audit.handlers"):
            for n in range(2):
                await producer.send_and_wait(topic, json.dumps({"genuine": n}).encode(), partition=0)
            await wait_for(lambda: offsets_logged(kit, topic, [0, 1]), timeout=60, what="the first two records logged")
            assert await forge(kit, topic, a_result_event()) == 2
            genuine = json.dumps({"genuine": 2}).encode()
            for value in (genuine, json.dumps({"genuine": 3}).encode()):
                await producer.send_and_wait(topic, value, partition=0)
            await wait_for(lambda: offsets_logged(kit, topic, [0, 1, 2, 3]), timeout=60, what="the chain going on")
            [conflict] = await wait_for(lambda: rows(kit, "SELECT * FROM audit.conflicts WHERE topic = $1", topic), what="the conflict")
    finally:
        await audit.stop()

    assert (conflict["kafka_offset"], conflict["logged_seq"], conflict["value"]) == (2, 3, genuine)
    assert "value" in conflict["differs"]
    assert REGISTRY.get_sample_value("tidegate_audit_conflicts_total", {"topic": topic}) == before + 1
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and "CONFLICT" in r.getMessage()]
    assert len(said) == 1
    assert f"{topic}[0] offset 2" in said[0]

    result = await audit_cli(kit, "verify")
    assert result.exit_code == 1, result.output
    assert f"{topic}[0] seq 3 (offset 2): conflict recorded" in result.output

    # The evidence is out of the login's reach: it may not change or remove it.
    conn = await asyncpg.connect(service_database_url(kit, "audit"))
    try:
        for sql in ("DELETE FROM audit.conflicts", "UPDATE audit.conflicts SET value = NULL", "TRUNCATE audit.conflicts"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)
    finally:
        await conn.close()


async def test_a_plain_redelivery_of_the_same_records_is_not_a_conflict(kit: KitSettings, producer: AIOKafkaProducer) -> None:
    topic = kit.topic_prefix + "actions.results"
    for n in range(3):
        await producer.send_and_wait(topic, json.dumps({"n": n}).encode(), partition=0, key=b"k", headers=[("h", b"v")])
    records = await bus_records(kit, topic)
    assert [r.offset for r in records] == [0, 1, 2]
    log = await PostgresAuditLog.connect(service_database_url(kit, "audit"))  # as the service writes: its own login
    try:
        recorder = Recorder(prefix=kit.topic_prefix, log=log)
        first = await recorder.record_batch(records)
        again = await recorder.record_batch(records[1:])  # a redelivery after a rebalance or a crash before the commit
    finally:
        await log.close()
    assert (len(first.rows), first.conflicts) == (3, [])
    assert (again.already_recorded, again.rows, again.conflicts) == (2, [], [])
    assert await rows(kit, "SELECT 1 FROM audit.conflicts WHERE starts_with(topic, $1)", kit.topic_prefix) == []


async def test_with_the_service_stopped_verify_content_and_signatures_name_the_forged_rows(
    kit: KitSettings, producer: AIOKafkaProducer, wait_for: Any
) -> None:
    topic = kit.topic_prefix + "actions.results"
    audit = build_audit(kit, SETTINGS)
    await audit.start()
    try:
        for n in range(2):
            await producer.send_and_wait(topic, json.dumps({"genuine": n}).encode(), partition=0)
        await wait_for(lambda: offsets_logged(kit, topic, [0, 1]), timeout=60, what="the first two records logged")
    finally:
        await audit.stop()
    assert await forge(kit, topic, a_result_event()) == 2  # while the service is stopped: it will start after it
    await producer.send_and_wait(topic, json.dumps({"genuine": 2}).encode(), partition=0)
    assert await forge(kit, topic, a_result_event(), ahead=100) == 102  # an offset the bus never had

    plain = await audit_cli(kit, "verify")
    assert plain.exit_code == 0, plain.output  # the chains are intact: the hashes cannot tell who wrote a row

    doc = json.loads((await audit_cli(kit, "verify", "--content", "--json")).output)
    assert [(m["seq"], m["offset"]) for m in doc["content"]["mismatches"]] == [(3, 2), (4, 102)], doc["content"]
    assert "value" in doc["content"]["mismatches"][0]["problem"]
    content = await audit_cli(kit, "verify", "--content")
    assert content.exit_code == 1, content.output
    assert f"{topic}[0] seq 3 (offset 2): differs from the record the bus holds at this offset (timestamp" in content.output
    assert f"{topic}[0] seq 4 (offset 102): the bus never had this offset" in content.output

    signatures = await audit_cli(kit, "verify", "--signatures", "--json")
    assert signatures.exit_code == 1, signatures.output
    report = json.loads(signatures.output)
    assert report["signatures_checked"] == 2
    named = [(b["topic"], b["seq"], b["offset"], b["problem"].split(": ")[1]) for b in report["breaks"]]
    assert named == [(topic, 3, 2, "signature_missing"), (topic, 4, 102, "signature_missing")]
    assert report["breaks"][0]["problem"].startswith("stored as a valid event, but its value does not verify")

    # What a reader meets first says so too (second red team F2: a forged "refund failed, nothing was paid" read as genuine
    # in `audit search` and `audit show`, with no mark).
    searched = [json.loads(line) for line in (await audit_cli(kit, "search", "--json", "--limit", "500")).output.splitlines()]
    ours = {line["seq"]: line["unverified"] for line in searched if line["topic"] == topic}
    assert ours[3] is not None
    assert "signature_missing" in ours[3]
    assert ours[4] is not None
    assert (ours[1], ours[2]) == (None, None)  # the genuine records (stored as not valid events) say nothing new
