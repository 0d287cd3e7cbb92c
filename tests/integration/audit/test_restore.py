"""The database restored to an earlier backup, as docs/operations.md describes: the audit records the rows since again.

The audit's position is the log's end, not its consumer group's offsets; its checkpoint ids go on
after the ones it published; and `audit verify`, with the bus's copies of the checkpoints too, passes.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from servicekit import ADMIN, Keyring, KitSettings, kafka_options
from services.audit.app import build
from services.audit.checkpoints import Restore
from services.audit.published import read_published_checkpoints
from services.audit.repository import PostgresAuditLog
from services.audit.settings import AuditSettings
from services.audit.verify import verify_log


async def _produce(producer: Any, topic: str, numbers: range) -> None:
    for i in numbers:
        await producer.send(topic, f'{{"n": {i}}}'.encode(), partition=i % 3)
    await producer.flush()


async def _restore(admin_url: str, prefix: str, backup: dict[tuple[str, int], list[int]], last_checkpoint: int) -> int:
    """What restoring the backup does to the audit's rows: those recorded since, and the checkpoints since, are gone."""
    conn = await asyncpg.connect(admin_url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")  # a restore replaces the data: no trigger stands in its way
            status = await conn.execute(
                "DELETE FROM audit.log l WHERE starts_with(l.topic, $1) AND NOT EXISTS ("
                " SELECT 1 FROM unnest($2::text[], $3::int[], $4::bigint[]) AS b(topic, partition, last)"
                " WHERE b.topic = l.topic AND b.partition = l.partition AND l.kafka_offset <= b.last)",
                prefix,
                [tp[0] for tp in backup],
                [tp[1] for tp in backup],
                [offsets[-1] for offsets in backup.values()],
            )
            await conn.execute("DELETE FROM audit.checkpoints WHERE scope = $1 AND checkpoint_id > $2", prefix, last_checkpoint)
    finally:
        await conn.close()
    return int(status.split()[-1])


async def test_after_a_restore_the_audit_records_the_rows_since_again_and_verify_with_the_bus_passes(
    kit: KitSettings, infra: Any, fast_settings: AuditSettings, producer: Any, probe: Any, wait_for: Any
) -> None:
    topic = kit.topic_prefix + "tasks"
    svc = build(kit, fast_settings)
    await svc.start()
    try:
        await _produce(producer, topic, range(30))
        await wait_for(lambda: svc.checkpointer.taken >= 1, what="a checkpoint of the first records")
        await wait_for(probe.matches, timeout=30, what="the first records and the checkpoint in the log")
        backup = await probe.logged()  # the backup is taken here
        backed_up_checkpoint = svc.checkpointer.taken
        await _produce(producer, topic, range(30, 60))
        await wait_for(lambda: svc.checkpointer.taken > backed_up_checkpoint, what="a checkpoint after the backup, published")
        await wait_for(probe.matches, timeout=30, what="every record in the log")
    finally:
        await svc.stop()
    published = await read_published_checkpoints(kit.kafka_bootstrap, kit.topic_prefix, client_options=kafka_options(kit, ADMIN))
    latest_published = published[-1].checkpoint_id
    assert latest_published > backed_up_checkpoint

    assert await _restore(infra.admin_database_url, kit.topic_prefix, backup, backed_up_checkpoint) >= 30
    assert not await probe.matches()

    svc = build(kit, fast_settings)  # restarted on the restored database: its group's offsets are past what the log holds
    await svc.start()
    try:
        await _produce(producer, topic, range(60, 70))
        await wait_for(probe.matches, timeout=60, what="the records since the backup recorded again, and the new ones")
        await wait_for(lambda: svc.checkpointer.taken >= 2, what="a checkpoint of the records read again")
        await wait_for(probe.matches, timeout=30, what="every record, the new checkpoints too, in the log")
    finally:
        await svc.stop()

    log = await PostgresAuditLog.connect(kit.database_url)
    try:
        assert await log.restores(kit.topic_prefix) == [
            Restore(checkpoint_id=latest_published + 1, superseded_from=backed_up_checkpoint + 1)
        ]
        keyring = Keyring.load(kit.keys_dir, "audit")
        assert (report := await verify_log(log, keyring, prefix=kit.topic_prefix)).ok, report.breaks
        published = await read_published_checkpoints(kit.kafka_bootstrap, kit.topic_prefix, client_options=kafka_options(kit, ADMIN))
        assert [cp.checkpoint_id for cp in published] == list(range(1, published[-1].checkpoint_id + 1))  # no id taken twice
        report = await verify_log(log, keyring, prefix=kit.topic_prefix, extra_checkpoints=published)
        assert report.ok, report.breaks
    finally:
        await log.close()
