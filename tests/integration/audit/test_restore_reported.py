"""The DBA of auditor1 F1: checkpoints deleted from the database, then a start of the service. It is taken for a restore (nothing in
the database tells the two apart: docs/audit.md), so it is made loud: an ERROR, a counted restore, and `verify` naming the restore
and every published checkpoint it superseded, in text and JSON. A restore that `audit.restores` does not explain is a break.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from servicekit import ADMIN, Keyring, KitSettings, kafka_options
from services.audit.app import build
from services.audit.published import read_published_checkpoints
from services.audit.repository import PostgresAuditLog
from services.audit.settings import AuditSettings
from services.audit.verify import verify_log
from tidegate.cli import app as cli

RESTORES = "tidegate_audit_restores_total"


async def _produce(producer: Any, topic: str, numbers: range) -> None:
    for i in numbers:
        await producer.send(topic, f'{{"n": {i}}}'.encode(), partition=i % 2)
    await producer.flush()


async def _stored(kit: KitSettings) -> list[Any]:
    log = await PostgresAuditLog.connect(kit.database_url)
    try:
        return await log.checkpoints(kit.topic_prefix)
    finally:
        await log.close()


async def _delete_past(admin_url: str, prefix: str, kept: Any) -> None:
    """As the superuser: every checkpoint after `kept` and every row past the heads it signed, as F1's DBA deletes them."""
    names = list(kept.heads)
    conn = await asyncpg.connect(admin_url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")  # the superuser silences the no-delete trigger
            await conn.execute(
                "DELETE FROM audit.log l WHERE starts_with(l.topic, $1) AND l.seq > coalesce(("
                " SELECT b.seq FROM unnest($2::text[], $3::int[]) AS b(name, seq) WHERE b.name = l.topic || ':' || l.partition), 0)",
                prefix,
                names,
                [int(kept.heads[n]["seq"]) for n in names],
            )
            await conn.execute("DELETE FROM audit.checkpoints WHERE scope = $1 AND checkpoint_id > $2", prefix, kept.checkpoint_id)
    finally:
        await conn.close()


async def _cli(kit: KitSettings, *args: str) -> Any:
    env = {
        "TIDEGATE_DATABASE_URL": kit.database_url, "TIDEGATE_KEYS_DIR": str(kit.keys_dir), "TIDEGATE_TOPIC_PREFIX": kit.topic_prefix,
        "TIDEGATE_KAFKA_BOOTSTRAP": kit.kafka_bootstrap,
    }  # fmt: skip
    return await asyncio.to_thread(CliRunner().invoke, cli, ["audit", "verify", *args], env=env)


async def test_checkpoints_deleted_before_a_start_are_a_loud_restore_and_verify_names_what_it_superseded(
    kit: KitSettings, infra: Any, fast_settings: AuditSettings, producer: Any, probe: Any, wait_for: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.ERROR, logger="services.audit.handlers")
    topic = kit.topic_prefix + "tasks"
    svc = build(kit, fast_settings)
    await svc.start()
    try:
        await _produce(producer, topic, range(10))
        await wait_for(lambda: svc.checkpointer.taken >= 1, what="a checkpoint of the first records")
        await wait_for(probe.matches, timeout=30, what="the first records in the log")
        first_taken = svc.checkpointer.taken
        await _produce(producer, topic, range(10, 20))
        await wait_for(probe.matches, timeout=30, what="every record in the log")
        await wait_for(lambda: svc.checkpointer.taken > first_taken, what="a checkpoint of the later records")
    finally:
        await svc.stop()
    stored = await _stored(kit)
    kept = next(cp for cp in stored if sum(int(h["seq"]) for n, h in cp.heads.items() if n.startswith(topic)) < 20)
    published = await read_published_checkpoints(kit.kafka_bootstrap, kit.topic_prefix, client_options=kafka_options(kit, ADMIN))
    latest_published = published[-1].checkpoint_id
    assert latest_published > kept.checkpoint_id

    await _delete_past(infra.admin_database_url, kit.topic_prefix, kept)  # the DBA of F1: no backup was restored
    restores_before = REGISTRY.get_sample_value(RESTORES) or 0.0
    svc = build(kit, fast_settings)
    await svc.start()
    try:
        await wait_for(probe.matches, timeout=60, what="the records past the kept heads recorded again from the bus")
        await wait_for(lambda: svc.checkpointer.taken >= 2, what="a checkpoint after the restore's")
    finally:
        await svc.stop()
    said = [r.getMessage() for r in caplog.records if "behind the bus" in r.getMessage()]
    assert len(said) == 1, said
    assert f"If nobody restored the database, checkpoints {kept.checkpoint_id + 1}..{latest_published} were deleted" in said[0]
    assert (REGISTRY.get_sample_value(RESTORES) or 0.0) == restores_before + 1

    published = await read_published_checkpoints(kit.kafka_bootstrap, kit.topic_prefix, client_options=kafka_options(kit, ADMIN))
    log = await PostgresAuditLog.connect(kit.database_url)
    try:
        keyring = Keyring.load(kit.keys_dir, "audit")
        report = await verify_log(log, keyring, prefix=kit.topic_prefix, extra_checkpoints=published)
        assert report.ok, report.breaks  # indistinguishable from a restore: it passes, and is named
        [restore] = report.restores
        assert (restore.checkpoint_id, restore.superseded_from) == (latest_published + 1, kept.checkpoint_id + 1)
        assert restore.superseded is not None
        assert [s.checkpoint_id for s in restore.superseded] == list(range(kept.checkpoint_id + 1, latest_published + 1))
        assert all(s.rows_past_restore > 0 for s in restore.superseded)
        assert report.newest is not None
        assert report.newest.checkpoint_id >= restore.checkpoint_id
        plain = await verify_log(log, keyring, prefix=kit.topic_prefix)
        assert [(r.checkpoint_id, r.superseded) for r in plain.restores] == [(restore.checkpoint_id, None)]  # without the bus
    finally:
        await log.close()

    done = await _cli(kit, "--bus")
    assert done.exit_code == 0, done.output
    assert f"restore: checkpoint {restore.checkpoint_id} (taken" in done.output
    assert f"checkpoints {kept.checkpoint_id + 1}..{latest_published} were superseded" in done.output
    assert f"superseded: checkpoint {kept.checkpoint_id + 1} (taken" in done.output
    assert "by count only" in done.output
    assert "newest checkpoint: " in done.output
    assert "unsigned yet" in done.output
    doc = json.loads((await _cli(kit, "--bus", "--json")).output)
    assert doc["restores"][0]["checkpoint_id"] == restore.checkpoint_id
    assert [s["checkpoint_id"] for s in doc["restores"][0]["superseded"]] == [s.checkpoint_id for s in restore.superseded]
    assert doc["newest"]["checkpoint_id"] == report.newest.checkpoint_id
    assert isinstance(doc["rows_unsigned"], int)

    conn = await asyncpg.connect(infra.admin_database_url)  # the DBA also deletes the restore row: nothing explains the gap
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute("DELETE FROM audit.restores WHERE scope = $1", kit.topic_prefix)
    finally:
        await conn.close()
    done = await _cli(kit, "--bus")
    assert done.exit_code == 1, done.output
    said = " ".join(done.output.split())  # as one line: rich wraps at the runner's width
    assert f"checkpoint {kept.checkpoint_id + 1}: published on the bus but missing from the database, and no restore" in said
