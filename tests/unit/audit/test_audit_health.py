"""The audit's own retry loop is what its `/health` reports: `retrying: <error>` while a batch is not written, as other services do."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord

from servicekit import KitSettings
from services.audit.app import AuditDeps, build
from services.audit.chain import AppendResult
from services.audit.repository import InMemoryAuditLog
from services.audit.rows import Observed


@dataclass
class WatchedLog(InMemoryAuditLog):
    """The in-memory log that notes what `/health` said each time a batch is offered to it."""

    health: Callable[[], dict[str, Any]] | None = None
    said: list[str | None] = field(default_factory=list)

    async def append(self, records: Sequence[Observed]) -> AppendResult:
        assert self.health is not None
        self.said.append(self.health()["retrying"])
        return await super().append(records)


def _record(offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("tidegate.tasks", 0, offset, 1_790_000_000_000, 0, None, b"{}", None, 0, 2, [])


async def test_health_says_retrying_while_a_batch_is_not_written_and_clears_once_one_is(tmp_path: Path) -> None:
    down = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
    log = WatchedLog(fail_next=[down, down])
    (tmp_path / "keys").mkdir(exist_ok=True)  # a service refuses a keys folder that is not there
    process = build(KitSettings(keys_dir=tmp_path / "keys", tools_dir=tmp_path / "no-tools"), deps=AuditDeps(log=log))
    log.health = process.health

    await process.recorder.record_batch([_record(0), _record(1)])

    assert log.said == [None, repr(down), repr(down)]  # the two retries were shown; the first attempt had nothing to show
    assert process.health()["retrying"] is None  # the batch is written: the database answers again
    assert [r.kafka_offset for r in log.rows] == [0, 1]
