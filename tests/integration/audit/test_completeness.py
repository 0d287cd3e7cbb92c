"""`tidegate audit verify --complete` proves every record the bus holds has its row, or names the missing offsets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
from typer.testing import CliRunner

from servicekit import ADMIN, KitSettings, kafka_options
from services.audit.app import build
from services.audit.completeness import check_complete
from services.audit.repository import PostgresAuditLog
from services.audit.settings import AuditSettings
from tidegate.cli import app as cli


async def _complete(kit: KitSettings) -> Any:
    log = await PostgresAuditLog.connect(kit.database_url)
    try:
        return await check_complete(log, kit.kafka_bootstrap, kit.topic_prefix, client_options=kafka_options(kit, ADMIN))
    finally:
        await log.close()


async def _complete_if_ok(kit: KitSettings) -> Any:
    report = await _complete(kit)
    return report if report.ok else None


def _cli_env(kit: KitSettings) -> dict[str, str]:
    return {
        "TIDEGATE_DATABASE_URL": kit.database_url,
        "TIDEGATE_KAFKA_BOOTSTRAP": kit.kafka_bootstrap,
        "TIDEGATE_KEYS_DIR": str(kit.keys_dir),
        "TIDEGATE_TOPIC_PREFIX": kit.topic_prefix,
        "COLUMNS": "200",
    }


async def _cli(kit: KitSettings, *args: str) -> Any:
    return await asyncio.to_thread(CliRunner().invoke, cli, ["audit", "verify", "--complete", "--json", *args], env=_cli_env(kit))


async def test_complete_then_a_deleted_row_and_records_written_while_the_audit_was_down_are_named(
    kit: KitSettings, infra: Any, fast_settings: AuditSettings, producer: Any, probe: Any, wait_for: Any
) -> None:
    tasks, proposed = kit.topic_prefix + "tasks", kit.topic_prefix + "actions.proposed"
    checkpoints = kit.topic_prefix + "audit.checkpoints"
    svc = build(kit, fast_settings)
    await svc.start()
    try:
        for i in range(10):
            await producer.send_and_wait(tasks, json.dumps({"n": i}).encode(), partition=0)
        for i in range(5):
            await producer.send_and_wait(proposed, json.dumps({"n": i}).encode(), partition=0)
        await wait_for(probe.matches, timeout=30, what="every record in the log")
        # Proven while the service runs: its own checkpoints (published on a timer) are recorded a moment after.
        report = await wait_for(lambda: _complete_if_ok(kit), timeout=30, what="a complete log")
        assert report.offsets >= 15
        result = await _cli(kit)
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["completeness"]["missing"] == []
    finally:
        await svc.stop()

    # A row deleted by someone with the database's superuser (trigger bypassed), and three records
    # written while the audit service was down.
    conn = await asyncpg.connect(infra.admin_database_url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute("DELETE FROM audit.log WHERE topic = $1 AND partition = 0 AND kafka_offset = 4", tasks)
    finally:
        await conn.close()
    for i in range(3):
        await producer.send_and_wait(proposed, json.dumps({"late": i}).encode(), partition=0)

    report = await _complete(kit)
    # (A checkpoint the stopping service published after its last poll may be named too, at the end of its topic.)
    assert [(m.topic, m.partition, m.first, m.last, m.at_end) for m in report.missing if m.topic != checkpoints] == [
        (proposed, 0, 5, 7, True),
        (tasks, 0, 4, 4, False),
    ]
    assert sum(m.count for m in report.missing if m.topic != checkpoints) == 4
    result = await _cli(kit, "--catch-up-s", "0")  # the audit service is down: what is missing at the end stays missing
    assert result.exit_code == 1
    doc = json.loads(result.output)
    named = [(m["topic"], m["first"], m["last"]) for m in doc["completeness"]["missing"] if m["topic"] != checkpoints]
    assert named == [(proposed, 5, 7), (tasks, 4, 4)]
    assert doc["breaks"]  # the deleted row also breaks its chain
    # The audit's consumer group had committed past the deleted row (it commits only what it stored): removed, not lag.
    # The records written while it was down are past its committed offset: lag (auditor1 F6).
    recorded = {m["topic"]: m["recorded_before"] for m in doc["completeness"]["missing"] if m["topic"] != checkpoints}
    assert recorded == {proposed: None, tasks: 10}
    said = await asyncio.to_thread(CliRunner().invoke, cli, ["audit", "verify", "--complete", "--catch-up-s", "0"], env=_cli_env(kit))
    assert "offset 4: 1 record(s) not in the audit log (the audit service had recorded them" in " ".join(said.output.split())


async def test_the_newest_records_are_waited_for_while_the_audit_service_catches_up(
    kit: KitSettings, fast_settings: AuditSettings, producer: Any, probe: Any, wait_for: Any
) -> None:
    """On a live deployment the newest records are a poll behind (and the service's own checkpoints, on a timer, are
    always being written): `--complete` waits for them, up to `--catch-up-s`, instead of naming them missing."""
    proposed = kit.topic_prefix + "actions.proposed"
    svc = build(kit, fast_settings)
    await svc.start()
    try:
        await producer.send_and_wait(proposed, json.dumps({"n": 0}).encode(), partition=0)
        await wait_for(probe.matches, timeout=30, what="every record in the log")
    finally:
        await svc.stop()
    for i in range(3):  # written while the audit service is down; it is started again while the check waits
        await producer.send_and_wait(proposed, json.dumps({"late": i}).encode(), partition=0)

    told: list[Any] = []
    log = await PostgresAuditLog.connect(kit.database_url)
    again = build(kit, fast_settings)
    try:
        checking = asyncio.create_task(
            check_complete(
                log, kit.kafka_bootstrap, kit.topic_prefix, client_options=kafka_options(kit, ADMIN), catch_up_s=60, waiting=told.append
            )
        )
        await wait_for(lambda: told, timeout=30, what="the check waiting for the newest records")
        assert [(m.topic, m.first, m.last, m.at_end) for m in told[0] if m.topic == proposed] == [(proposed, 1, 3, True)]
        await again.start()
        report = await checking
        assert report.ok, [m.describe() for m in report.missing]
    finally:
        await again.stop()
        await log.close()


async def test_records_pruned_into_an_archive_while_the_bus_still_holds_them_are_not_named_missing(
    kit: KitSettings, fast_settings: AuditSettings, producer: Any, probe: Any, wait_for: Any, tmp_path: Any
) -> None:
    """A prune (`tidegate audit archive --prune`) of records the bus still keeps: `--complete` compares each pruned
    chain from its anchor on and counts the offsets before it as archived, instead of naming them missing."""
    tasks = kit.topic_prefix + "tasks"
    svc = build(kit, fast_settings)
    await svc.start()
    try:
        for i in range(10):
            await producer.send_and_wait(tasks, json.dumps({"n": i}).encode(), partition=0)
        await wait_for(probe.matches, timeout=30, what="every record in the log")
        await wait_for(lambda: _complete_if_ok(kit), timeout=30, what="a complete log, checkpointed")
    finally:
        await svc.stop()
    conn = await asyncpg.connect(kit.database_url)
    try:
        latest = await conn.fetchval("SELECT max(checkpoint_id) FROM audit.checkpoints WHERE scope = $1", kit.topic_prefix)
    finally:
        await conn.close()
    env = {"TIDEGATE_DATABASE_URL": kit.database_url, "TIDEGATE_KEYS_DIR": str(kit.keys_dir), "TIDEGATE_TOPIC_PREFIX": kit.topic_prefix}
    archive = tmp_path / "audit.jsonl.gz"
    args = ["audit", "archive", "--through-checkpoint", str(latest), "--out", str(archive), "--prune"]
    result = await asyncio.to_thread(CliRunner().invoke, cli, args, env=env)
    assert result.exit_code == 0, result.output

    report = await _complete(kit)
    assert report.ok, [m.describe() for m in report.missing]
    assert report.archived >= 9  # tasks[0] offsets 0..8 at least: each chain keeps the head its checkpoint signed
    result = await _cli(kit, "--catch-up-s", "0")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["completeness"]["archived"] == report.archived
