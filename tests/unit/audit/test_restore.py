"""A database restored to an earlier backup: the audit reads the bus again from where the log ends, and its checkpoints go on.

The operator's view: a restore is honest, so `verify` (with the bus's copies too) passes once the
records since the backup are recorded again; what the bus no longer holds is named as the restore's
gap; and a superuser who rewrites the log cannot pass the rewrite off as a restore.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition

from servicekit import Keyring, SigningKey
from services.audit.checkpoints import Checkpoint
from services.audit.handlers import Checkpointer, Recorder
from services.audit.repository import InMemoryAuditLog
from services.audit.verify import verify_log

PREFIX = "tidegate."
TOPIC = PREFIX + "tasks"


class Published:
    """What the audit published on `audit.checkpoints` (the bus's copy, out of a database superuser's reach)."""

    def __init__(self) -> None:
        self.checkpoints: list[Checkpoint] = []

    async def publish(self, event: Any) -> None:
        d = event.data
        self.checkpoints.append(
            Checkpoint(scope=PREFIX, checkpoint_id=d.checkpoint_id, taken_at=d.taken_at or event.time, heads=d.heads, rows=d.rows,
                       key_id=d.key_id, signature=d.signature)
        )  # fmt: skip

    @property
    def latest(self) -> Checkpoint:
        return self.checkpoints[-1]


def _checkpointer(log: InMemoryAuditLog, keys: Path, bus: Published) -> Checkpointer:
    return Checkpointer(log, SigningKey.load_or_create(keys, "audit"), bus.publish, PREFIX + "audit.checkpoints", 1.0, prefix=PREFIX)


async def _record(log: InMemoryAuditLog, make: Any, offsets: range) -> None:
    await log.append([make("tasks", f'{{"n": {i}}}'.encode(), offset=i) for i in offsets])


@pytest.fixture
async def restored(make: Any, tmp_path: Path) -> tuple[InMemoryAuditLog, Published]:
    """Offsets 0..9 recorded and checkpointed (1), backed up; 10..14 recorded and checkpointed (2); the backup restored."""
    log, bus = InMemoryAuditLog(), Published()
    await _record(log, make, range(10))
    assert await _checkpointer(log, tmp_path, bus).tick() is not None
    backup = copy.deepcopy(log)
    await _record(log, make, range(10, 15))
    assert await _checkpointer(log, tmp_path, bus).tick() is not None
    assert [cp.checkpoint_id for cp in bus.checkpoints] == [1, 2]
    return backup, bus


async def test_after_a_restore_the_ids_continue_after_the_published_ones_and_verify_passes_once_the_bus_is_read_again(
    restored: tuple[InMemoryAuditLog, Published], make: Any, tmp_path: Path
) -> None:
    log, bus = restored
    checkpointer = _checkpointer(log, tmp_path, bus)
    taken = await checkpointer.continue_after(bus.latest)
    assert taken is not None
    assert taken.checkpoint_id == 3
    assert taken.heads[f"{TOPIC}:0"]["offset"] == 9  # the heads the restored database held, before anything was read again
    await _record(log, make, range(10, 20))  # read again from after the log's end, and newer records
    await checkpointer.tick()
    assert [cp.checkpoint_id for cp in bus.checkpoints] == [1, 2, 3, 4]
    keyring = Keyring.load(tmp_path, "audit")
    assert (report := await verify_log(log, keyring, prefix=PREFIX)).ok, report.breaks
    assert (report := await verify_log(log, keyring, prefix=PREFIX, extra_checkpoints=bus.checkpoints)).ok, report.breaks


async def test_a_database_that_is_not_behind_the_bus_is_no_restore(make: Any, tmp_path: Path) -> None:
    log, bus = InMemoryAuditLog(), Published()
    await _record(log, make, range(5))
    checkpointer = _checkpointer(log, tmp_path, bus)
    await checkpointer.tick()
    assert await checkpointer.continue_after(bus.latest) is None
    assert await checkpointer.continue_after(None) is None
    assert await log.restores(PREFIX) == []


async def test_records_the_bus_no_longer_held_are_named_as_the_restores_gap(
    restored: tuple[InMemoryAuditLog, Published], make: Any, tmp_path: Path
) -> None:
    log, bus = restored
    await _checkpointer(log, tmp_path, bus).continue_after(bus.latest)
    await _record(log, make, range(12, 15))  # 10 and 11 had left the bus (retention) when the audit read it again
    report = await verify_log(log, Keyring.load(tmp_path, "audit"), prefix=PREFIX, extra_checkpoints=bus.checkpoints)
    [brk] = report.breaks
    assert (brk.checkpoint_id, brk.topic, brk.partition) == (2, TOPIC, 0)
    assert "2 of the 5 record(s) at offsets 10..14" in brk.problem
    assert "gap the restore left" in brk.problem


async def test_a_rewrite_is_not_passed_off_as_a_restore(restored: tuple[InMemoryAuditLog, Published], make: Any, tmp_path: Path) -> None:
    """A superuser rewrites a row the backup held (and its chain after it), deletes the checkpoints, and lets the audit restart."""
    log, bus = restored
    rewritten = InMemoryAuditLog()
    for row in log.rows:  # the same records, one value changed, every hash recomputed: the chain alone checks out
        await rewritten.append([make("tasks", b'{"n": 400}' if row.kafka_offset == 4 else row.value, offset=row.kafka_offset)])
    await _checkpointer(rewritten, tmp_path, bus).continue_after(bus.latest)  # the database is behind the bus: a "restore"
    await _record(rewritten, make, range(10, 15))
    report = await verify_log(rewritten, Keyring.load(tmp_path, "audit"), prefix=PREFIX, extra_checkpoints=bus.checkpoints)
    assert any("rewritten" in b.problem for b in report.breaks), report.breaks


class FakeConsumer:
    def __init__(self, committed: dict[TopicPartition, int] | None = None) -> None:
        self.sought: dict[TopicPartition, int | str] = {}
        self.offsets = committed or {}  # the group's committed offsets, as Kafka keeps them

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.offsets.get(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.sought[tp] = offset

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        self.sought.update(dict.fromkeys(tps, "beginning"))


async def test_assigned_partitions_start_after_the_logs_last_row_not_at_the_groups_offsets(make: Any) -> None:
    log = InMemoryAuditLog()
    await _record(log, make, range(7))
    recorded, fresh = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    consumer = FakeConsumer({recorded: 12})  # a database restored to before offset 12: the log's end wins
    await Recorder(prefix=PREFIX, log=log).seek_to_log(consumer, {recorded, fresh})  # type: ignore[arg-type]
    assert consumer.sought == {recorded: 7, fresh: "beginning"}


async def test_rows_past_the_groups_committed_offset_do_not_move_the_start_past_it(make: Any) -> None:
    """Rows the audit's login forged ahead (out of Kafka's reach, the committed offset bounds the start): read again."""
    log = InMemoryAuditLog()
    await _record(log, make, range(7))
    recorded = TopicPartition(TOPIC, 0)
    consumer = FakeConsumer({recorded: 4})
    await Recorder(prefix=PREFIX, log=log).seek_to_log(consumer, {recorded})  # type: ignore[arg-type]
    assert consumer.sought == {recorded: 4}


class RestartingLog(InMemoryAuditLog):
    """The in-memory log whose next read of the heads fails once `restarting`, as a database restarting would."""

    restarting: bool = False

    async def heads(self, prefix: str = "") -> Any:
        if self.restarting:
            self.restarting = False
            raise ConnectionError("database restarting")
        return await super().heads(prefix)


async def test_the_seek_waits_for_the_database_instead_of_falling_back_to_the_groups_offsets(make: Any) -> None:
    log = RestartingLog()
    await log.append([make("tasks", b"{}", offset=i) for i in range(3)])
    log.restarting = True
    consumer, recorder = FakeConsumer(), Recorder(prefix=PREFIX, log=log)
    await recorder.seek_to_log(consumer, {TopicPartition(TOPIC, 0)})  # type: ignore[arg-type]
    assert recorder.retries == 1
    assert consumer.sought == {TopicPartition(TOPIC, 0): 3}
