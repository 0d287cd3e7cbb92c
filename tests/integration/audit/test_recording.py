"""The audit records every record of every topic of the deployment, exactly once, and signs its heads."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from signers import signed

import schemas as s
from schemas.examples import sample_events
from servicekit import ADMIN, Keyring, KitSettings, ensure_topics, kafka_options
from services.audit.app import build
from services.audit.published import read_published_checkpoints
from services.audit.repository import PostgresAuditLog
from services.audit.settings import AuditSettings
from services.audit.verify import verify_log


async def test_every_topic_is_recorded_raw_including_invalid_records_and_new_topics(
    kit: KitSettings, fast_settings: AuditSettings, producer: Any, probe: Any, wait_for: Any
) -> None:
    await ensure_topics(kit.kafka_bootstrap, kit.topic_prefix, sorted({topic for topic, _ in sample_events()}))
    svc = build(kit, fast_settings)
    await svc.start()
    try:
        task = f"t-{uuid.uuid4().hex[:8]}"
        sent = []
        for topic, event in sample_events():
            if topic == "audit.checkpoints":
                continue  # the service publishes its own
            event = signed(event.model_copy(update={"subject": task if event.subject else None}), kit)
            await producer.send_and_wait(
                kit.topic_prefix + topic,
                s.encode(event),
                key=event.key,
                headers=[(k, v.encode()) for k, v in s.headers_for(event).items()],
            )
            sent.append(event)
        # Not events at all: still on the bus, so still in the record.
        await producer.send_and_wait(kit.topic_prefix + "tasks", b"\xff\xfe not json", key=task.encode(), headers=[("x-bin", b"\xff\x00")])
        await producer.send_and_wait(
            kit.topic_prefix + "actions.proposed", json.dumps({"id": "x", "type": "tidegate.action.proposed"}).encode(), key=task.encode()
        )
        # A topic created after the service started is covered with no change.
        await ensure_topics(kit.kafka_bootstrap, kit.topic_prefix, ["tools.brand_new.requests"])
        late = s.ToolInvocation.build(
            s.ToolInvocationData(
                action_id="a-late",
                task_id=task,
                tenant_id="acme",
                tool="brand_new",
                args={},
                idempotency_key="a-late",
                deadline=s.utcnow(),
                reply_topic="x",
            ),
            source="tidegate/test",
        )
        late = signed(late, kit)
        await producer.send_and_wait(kit.topic_prefix + "tools.brand_new.requests", s.encode(late), key=late.key)
        # A well-formed event nobody signed: recorded too, as invalid, with the refusal's code.
        unsigned = s.TaskSubmitted.build(
            s.TaskSubmittedData(task_id=task, tenant_id="acme", workflow="w", input={}, requested_by="mallory"), source="x"
        )
        await producer.send_and_wait(kit.topic_prefix + "tasks", s.encode(unsigned), key=unsigned.key)

        await wait_for(probe.matches, timeout=30, what="every record of every topic in the log")
        log = PostgresAuditLog(svc.pool)
        rows = {r.event_id: r for r in await log.search(_all(), limit=10_000) if r.event_id}
        for event in [*sent, late]:
            row = rows[event.id]
            assert row.valid
            assert not row.duplicate
            assert row.value == s.encode(event)
            assert row.event_type == event.type
            assert row.tenant_id == event.tenantid
        assert rows[late.id].topic == kit.topic_prefix + "tools.brand_new.requests"
        invalid = [r for r in await log.task_rows(task) if not r.valid]
        assert {r.value for r in invalid} == {
            b"\xff\xfe not json",
            json.dumps({"id": "x", "type": "tidegate.action.proposed"}).encode(),
            s.encode(unsigned),
        }
        assert rows[unsigned.id].invalid_reason.startswith("signature_missing: ")
        assert all(r.invalid_reason for r in invalid)
        binary = next(r for r in invalid if r.value == b"\xff\xfe not json")
        assert binary.headers == [{"k": "x-bin", "b64": "/wA="}]

        # Checkpoints are taken, stored and published, and the whole log verifies.
        await wait_for(lambda: svc.checkpointer is not None and svc.checkpointer.taken >= 1, what="a checkpoint")
        await wait_for(probe.matches, timeout=10, what="the checkpoint recorded too")
        published = await read_published_checkpoints(kit.kafka_bootstrap, kit.topic_prefix, client_options=kafka_options(kit, ADMIN))
        assert published
        report = await verify_log(log, Keyring.load(kit.keys_dir, "audit"), prefix=kit.topic_prefix, extra_checkpoints=published)
        assert report.ok, report.breaks
        assert report.checkpoints >= 1
    finally:
        await svc.stop()


async def test_a_restarted_service_records_nothing_twice_and_stops_checkpointing_when_idle(
    kit: KitSettings, fast_settings: AuditSettings, producer: Any, probe: Any, wait_for: Any
) -> None:
    first = build(kit, fast_settings)
    await first.start()
    try:
        for i in range(50):
            await producer.send(kit.topic_prefix + "tasks", f"junk {i}".encode(), partition=i % 6)
        await producer.flush()
        await wait_for(probe.matches, timeout=60, what="first 50 recorded")
    finally:
        await first.stop()
    # The same event id published again at another position: kept, flagged duplicate.
    event = signed(sample_events()[0][1], kit)
    for _ in range(2):
        await producer.send_and_wait(kit.topic_prefix + "tasks", s.encode(event), key=event.key)
    second = build(kit, fast_settings)
    await second.start()
    try:
        await wait_for(probe.matches, timeout=60, what="the rest recorded")
        pool = second.pool
        assert pool is not None
        dupes = await pool.fetch(
            "SELECT duplicate FROM audit.log WHERE event_id = $1 AND starts_with(topic, $2) ORDER BY seq", event.id, kit.topic_prefix
        )
        assert [r["duplicate"] for r in dupes] == [False, True]
        # Idle: the checkpoint topic's own chain does not cause endless checkpoints.
        await wait_for(lambda: second.checkpointer is not None and second.checkpointer.taken >= 1, what="a checkpoint")
        await second.checkpointer.tick()  # signs the final heads if the timer's checkpoint came before the last rows
        await wait_for(probe.matches, timeout=60, what="checkpoint recorded")
        count = await pool.fetchval("SELECT count(*) FROM audit.checkpoints WHERE scope = $1", kit.topic_prefix)
        await _ticks(second, 4)
        assert await pool.fetchval("SELECT count(*) FROM audit.checkpoints WHERE scope = $1", kit.topic_prefix) == count
    finally:
        await second.stop()


@contextlib.asynccontextmanager
async def _migrated_log_as_owner(kit: KitSettings, settings: AuditSettings, infra: Any) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the log's owner, once the service has migrated the log (started and stopped)."""
    svc = build(kit, settings)
    await svc.start()
    await svc.stop()
    conn = await asyncpg.connect(infra.database_url)
    try:
        yield conn
    finally:
        await conn.close()


async def test_the_service_role_may_only_insert_and_select_and_a_trigger_guards_the_owner(
    kit: KitSettings, fast_settings: AuditSettings, infra: Any
) -> None:
    async with _migrated_log_as_owner(kit, fast_settings, infra) as conn:
        for statement in (
            "UPDATE audit.log SET valid = true",
            "DELETE FROM audit.log",
            "TRUNCATE audit.log",
            "DELETE FROM audit.checkpoints",
        ):
            as_writer = conn.transaction()
            await as_writer.start()
            await conn.execute("SET LOCAL ROLE tidegate_audit_writer")
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await conn.execute(statement)
            await as_writer.rollback()
            # the owner (the services' role) is stopped by the trigger
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(statement)


async def test_analyze_keeps_statistics_only_for_the_columns_searches_filter_on(
    kit: KitSettings, fast_settings: AuditSettings, infra: Any
) -> None:
    """ANALYZE (autovacuum's, every tenth of growth) spends nothing on the raw bytes, headers, hashes and traceparent."""
    async with _migrated_log_as_owner(kit, fast_settings, infra) as conn:
        rows_of_this_test = conn.transaction()  # rolled back: the log stays append-only and its chains untouched
        await rows_of_this_test.start()
        await conn.execute(
            """INSERT INTO audit.log (topic, partition, kafka_offset, seq, kafka_ts, ts_type, key, headers, value, valid,
                   invalid_reason, event_id, event_type, tenant_id, task_id, action_id, tool, outcome, reasons, trace_id,
                   traceparent, event_time, duplicate, recorded_at, prev_hash, hash)
               SELECT $1, 0, i, i + 1, now(), 0, ('k' || i)::bytea, jsonb_build_array(jsonb_build_object('k', 'h', 'v', i::text)),
                   ('{"n": ' || i || '}')::bytea, i % 2 = 0, CASE WHEN i % 2 = 1 THEN 'signature_missing: ' || i END,
                   'e-' || i, 'tidegate.action.proposed', 'acme', 't-' || (i % 7), 'a-' || i, 'issue_refund', 'allowed',
                   ARRAY['r' || (i % 3)], 'tr-' || i, '00-' || i, now(), false, now(), sha256(i::text::bytea),
                   sha256((i + 1)::text::bytea)
               FROM generate_series(0, 199) AS i""",
            kit.topic_prefix + "statistics",
        )
        await conn.execute("ANALYZE audit.log")  # inside the transaction: it samples this transaction's rows too
        kept = {r["attname"] for r in await conn.fetch("SELECT attname FROM pg_stats WHERE schemaname = 'audit' AND tablename = 'log'")}
        await rows_of_this_test.rollback()
    assert {"topic", "seq", "kafka_ts", "key", "event_type", "tenant_id", "task_id", "action_id", "trace_id", "reasons"} <= kept
    assert not kept & {"value", "headers", "prev_hash", "hash", "traceparent", "invalid_reason"}


def _all() -> Any:
    from services.audit.repository import SearchFilters

    return SearchFilters(include_duplicates=True)


async def _ticks(svc: Any, n: int) -> None:
    for _ in range(n):
        await svc.checkpointer.tick()
