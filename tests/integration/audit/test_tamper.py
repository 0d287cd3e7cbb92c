"""`tidegate audit verify` names the first broken link after an attacker with superuser access edits the log."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import pytest
from typer.testing import CliRunner

from servicekit import Keyring, KitSettings, SigningKey, apply_migrations
from services.audit.app import MIGRATIONS
from services.audit.handlers import Checkpointer
from services.audit.records import observe
from services.audit.repository import PostgresAuditLog
from services.audit.rows import LogRow
from services.audit.verify import verify_log
from tidegate.cli import app as cli

PARTITION = 2


@pytest.fixture
def kit(infra: Any, prefix: str, tmp_path: Any) -> KitSettings:
    """Kit settings on the session's database; these tests attack the database and need no Kafka."""
    return KitSettings(
        kafka_bootstrap=infra.kafka_bootstrap, database_url=infra.database_url, topic_prefix=prefix, keys_dir=tmp_path / "keys"
    )


@pytest.fixture
async def recorded(kit: KitSettings) -> str:
    """Twenty records on one partition of `tasks`, appended through the service's repository and
    checkpointed (Kafka is not needed to attack the database: test_recording covers the consumer)."""
    topic = kit.topic_prefix + "tasks"
    log = await PostgresAuditLog.connect(kit.database_url)
    try:
        await apply_migrations(log.pool, "audit", MIGRATIONS)
        for first in (0, 10):
            batch = [
                observe(topic=topic, partition=PARTITION, offset=i, timestamp_ms=1_790_000_000_000 + i, timestamp_type=0, key=None,
                        value=json.dumps({"n": i, "run": uuid.uuid4().hex}).encode(), headers=[], prefix=kit.topic_prefix)
                for i in range(first, first + 10)
            ]  # fmt: skip
            await log.append(batch)
        published: list[Any] = []
        checkpointer = Checkpointer(
            log=log, key=SigningKey.load_or_create(kit.keys_dir, "audit"), publish=_collect(published),
            checkpoint_topic=kit.topic_prefix + "audit.checkpoints", interval_s=60, prefix=kit.topic_prefix,
        )  # fmt: skip
        assert await checkpointer.tick() is not None
        assert len(published) == 1
    finally:
        await log.close()
    return topic


def _collect(into: list[Any]) -> Any:
    async def publish(event: Any) -> None:
        into.append(event)

    return publish


async def _attack(infra: Any, *statements: str, args: tuple[Any, ...] = ()) -> None:
    """Run statements as the superuser with the append-only trigger bypassed, as an attacker would."""
    conn = await asyncpg.connect(infra.admin_database_url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            for statement in statements:
                await conn.execute(statement, *args) if args and "$" in statement else await conn.execute(statement)
    finally:
        await conn.close()


async def _verify(kit: KitSettings) -> Any:
    log = await PostgresAuditLog.connect(kit.database_url)
    try:
        return await verify_log(log, Keyring.load(kit.keys_dir, "audit"), prefix=kit.topic_prefix)
    finally:
        await log.close()


async def _cli_verify(kit: KitSettings) -> Any:
    env = {"TIDEGATE_DATABASE_URL": kit.database_url, "TIDEGATE_KEYS_DIR": str(kit.keys_dir), "TIDEGATE_TOPIC_PREFIX": kit.topic_prefix}
    return await asyncio.to_thread(CliRunner().invoke, cli, ["audit", "verify"], env=env)


def _where(topic: str) -> str:
    return f"topic = '{topic}' AND partition = {PARTITION}"


async def test_an_intact_log_verifies_and_the_cli_says_so(kit: KitSettings, recorded: str) -> None:
    result = await _cli_verify(kit)
    assert result.exit_code == 0, result.output
    assert "intact" in result.output


async def test_an_edited_row_is_named(kit: KitSettings, infra: Any, recorded: str) -> None:
    await _attack(infra, f"UPDATE audit.log SET value = convert_to('{{\"n\": 999}}', 'UTF8') WHERE {_where(recorded)} AND seq = 7")
    report = await _verify(kit)
    first = report.breaks[0]
    assert (first.topic, first.partition, first.seq) == (recorded, PARTITION, 7)
    assert "edited" in first.problem
    result = await _cli_verify(kit)
    assert result.exit_code == 1
    assert f"{recorded}[{PARTITION}] seq 7" in result.output


async def test_a_deleted_row_is_named(kit: KitSettings, infra: Any, recorded: str) -> None:
    await _attack(infra, f"DELETE FROM audit.log WHERE {_where(recorded)} AND seq = 5")
    first = (await _verify(kit)).breaks[0]
    assert (first.topic, first.seq) == (recorded, 6)
    assert "seq 5 missing" in first.problem


async def test_an_inserted_row_is_named_even_with_a_correct_hash_of_its_own(kit: KitSettings, infra: Any, recorded: str) -> None:
    # The attacker makes room at seq 11 and forges a row that links correctly to seq 10.
    conn = await asyncpg.connect(infra.admin_database_url)
    try:
        row10 = await conn.fetchrow(f"SELECT * FROM audit.log WHERE {_where(recorded)} AND seq = 10")
    finally:
        await conn.close()
    values = dict(row10)
    values["headers"] = json.loads(values["headers"])
    values.update(seq=11, kafka_offset=10_000, value=b'{"forged": true}', prev_hash=row10["hash"])
    forged = LogRow(**{**values, "hash": b""})
    forged = LogRow(**{**values, "hash": forged.expected_hash()})
    await _attack(
        infra,
        f"UPDATE audit.log SET seq = -seq WHERE {_where(recorded)} AND seq >= 11",
        f"UPDATE audit.log SET seq = -seq + 1 WHERE {_where(recorded)} AND seq < 0",
    )
    conn = await asyncpg.connect(infra.admin_database_url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            d = forged.as_tuple()
            cols = ", ".join(f"${i + 1}" for i in range(len(d)))
            args = list(d)
            args[7] = json.dumps(forged.headers)
            await conn.execute(f"INSERT INTO audit.log VALUES ({cols})", *args)
    finally:
        await conn.close()
    first = (await _verify(kit)).breaks[0]
    assert (first.topic, first.seq) == (recorded, 12)
    assert "prev_hash" in first.problem


async def test_reordered_rows_are_named(kit: KitSettings, infra: Any, recorded: str) -> None:
    await _attack(
        infra,
        f"UPDATE audit.log SET seq = -1 WHERE {_where(recorded)} AND seq = 3",
        f"UPDATE audit.log SET seq = 3 WHERE {_where(recorded)} AND seq = 4",
        f"UPDATE audit.log SET seq = 4 WHERE {_where(recorded)} AND seq = -1",
    )
    first = (await _verify(kit)).breaks[0]
    assert (first.topic, first.seq) == (recorded, 3)


async def test_a_truncated_tail_is_named_by_the_checkpoint(kit: KitSettings, infra: Any, recorded: str) -> None:
    await _attack(infra, f"DELETE FROM audit.log WHERE {_where(recorded)} AND seq > 17")
    report = await _verify(kit)
    assert not report.ok
    first = report.breaks[0]
    assert (first.topic, first.partition, first.seq) == (recorded, PARTITION, 20)
    assert first.checkpoint_id is not None
    assert "truncated" in first.problem
    assert "3 row(s) gone" in first.problem


async def test_a_forged_checkpoint_is_named(kit: KitSettings, infra: Any, recorded: str) -> None:
    await _attack(infra, "UPDATE audit.checkpoints SET rows = rows + 1, heads = heads")
    report = await _verify(kit)
    assert any("signature" in b.problem for b in report.breaks)


async def test_a_rewrite_with_the_checkpoints_deleted_is_named_only_by_the_published_copies_and_verify_says_so(
    kit: KitSettings, infra: Any, recorded: str
) -> None:
    """A superuser can cut the chain's tail and delete the checkpoint rows beside it: the chains alone then check out,
    so `verify` says it checked only what the database holds, and the copy the audit published (`--bus`) names the cut."""
    log = await PostgresAuditLog.connect(kit.database_url)
    try:
        published = await log.checkpoints(kit.topic_prefix)  # what the audit published on Kafka: out of the superuser's reach
    finally:
        await log.close()
    assert len(published) == 1
    await _attack(infra, f"DELETE FROM audit.log WHERE {_where(recorded)} AND seq > 17", "DELETE FROM audit.checkpoints")
    assert (await _verify(kit)).ok  # nothing left in the database to tell
    result = await _cli_verify(kit)
    assert result.exit_code == 0
    assert "(none is stored)" in result.output
    assert "add --bus" in result.output
    log = await PostgresAuditLog.connect(kit.database_url)
    try:
        report = await verify_log(log, Keyring.load(kit.keys_dir, "audit"), prefix=kit.topic_prefix, extra_checkpoints=published)
    finally:
        await log.close()
    assert not report.ok
    assert any("truncated" in b.problem or "missing" in b.problem for b in report.breaks), report.breaks
