"""The recorder never skips a batch; the checkpointer signs only real movement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import ConsumerRecord

from servicekit import SigningKey
from services.audit.handlers import Checkpointer, Recorder
from services.audit.repository import InMemoryAuditLog


def _record(topic: str, offset: int, value: bytes = b"{}") -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic, 0, offset, 1_790_000_000_000, 0, None, value, None, 0, len(value), [])


async def test_a_batch_is_retried_until_the_database_takes_it() -> None:
    log = InMemoryAuditLog(fail_next=[ConnectionRefusedError(), asyncpg.CannotConnectNowError("starting up"), RuntimeError("bug?")])
    recorder = Recorder(prefix="tidegate.", log=log, max_delay_s=0.2)
    result = await recorder.record_batch([_record("tidegate.tasks", o) for o in range(3)])
    assert len(result.rows) == 3
    assert recorder.retries == 3
    assert [r.kafka_offset for r in log.rows] == [0, 1, 2]


async def test_a_redelivered_batch_is_recorded_once() -> None:
    recorder = Recorder(prefix="tidegate.", log=InMemoryAuditLog())
    await recorder.record_batch([_record("tidegate.tasks", o) for o in range(3)])
    await recorder.record_batch([_record("tidegate.tasks", o) for o in range(5)])
    assert (recorder.recorded, recorder.skipped) == (5, 3)


async def test_checkpoints_follow_real_movement_not_their_own_records(tmp_path: Path) -> None:
    log = InMemoryAuditLog()
    published: list[Any] = []

    async def publish(event: Any) -> None:
        published.append(event)

    checkpointer = Checkpointer(
        log, SigningKey.load_or_create(tmp_path, "audit"), publish, "tidegate.audit.checkpoints", 1.0, prefix="tidegate."
    )
    recorder = Recorder(prefix="tidegate.", log=log)
    assert await checkpointer.tick() is None  # nothing to sign yet
    await recorder.record_batch([_record("tidegate.tasks", 0)])
    first = await checkpointer.tick()
    assert first is not None
    assert first.checkpoint_id == 1
    # The audit records its own published checkpoint: that alone must not cause another one.
    for offset in range(3):
        await recorder.record_batch([_record("tidegate.audit.checkpoints", offset)])
        assert await checkpointer.tick() is None
    await recorder.record_batch([_record("tidegate.tasks", 1)])
    second = await checkpointer.tick()
    assert second is not None
    assert second.checkpoint_id == 2
    assert second.heads["tidegate.audit.checkpoints:0"]["seq"] == 3  # but its chain is signed with the next one
    assert [e.data.checkpoint_id for e in published] == [1, 2]


async def test_a_checkpoint_that_could_not_be_published_is_published_at_the_next_tick(tmp_path: Path) -> None:
    log = InMemoryAuditLog()
    published: list[Any] = []
    failures = [ConnectionError("broker down")]

    async def publish(event: Any) -> None:
        if failures:
            raise failures.pop()
        published.append(event)

    checkpointer = Checkpointer(
        log, SigningKey.load_or_create(tmp_path, "audit"), publish, "tidegate.audit.checkpoints", 1.0, prefix="tidegate."
    )
    await Recorder(prefix="tidegate.", log=log).record_batch([_record("tidegate.tasks", 0)])
    with pytest.raises(ConnectionError):
        await checkpointer.tick()
    assert published == []
    await checkpointer.tick()
    assert [e.data.checkpoint_id for e in published] == [1]
