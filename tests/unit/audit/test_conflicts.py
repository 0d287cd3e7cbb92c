"""A record delivered at a position the log is past is a redelivery only if the log holds it there: else a conflict, never dropped."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.audit.handlers import Recorder
from services.audit.repository import InMemoryAuditLog
from services.audit.rows import LogRow, Observed

TOPIC = "tidegate.actions.results"


def forged_row(log: InMemoryAuditLog, genuine: Observed, value: bytes) -> None:
    """What the audit's database login can do: append a correctly chained row of its own content at the next offset."""
    heads = {(r.topic, r.partition): r for r in log.rows}
    head = heads.get((genuine.topic, genuine.partition))
    forged = genuine._replace(value=value, headers_json=None)
    log.rows.append(
        LogRow.link(forged, seq=(head.seq if head else 0) + 1, prev_hash=head.hash if head else b"\0" * 32, duplicate=False,
                    recorded_at=genuine.kafka_ts)
    )  # fmt: skip


async def test_an_identical_redelivery_is_skipped_as_before(make: Any) -> None:
    log = InMemoryAuditLog()
    batch = [make("actions.results", b"r%d" % o, offset=o) for o in range(4)]
    await log.append(batch)
    again = await log.append([*batch[2:], make("actions.results", b"r4", offset=4)])
    assert (again.already_recorded, len(again.rows), again.conflicts) == (2, 1, [])
    assert await log.conflicts() == []


async def test_a_forged_row_at_the_next_offset_makes_the_genuine_record_a_conflict_not_a_skip(make: Any) -> None:
    log = InMemoryAuditLog()
    await log.append([make("actions.results", b"r0", offset=0)])
    genuine = make("actions.results", b'{"genuine": true}', offset=1)
    forged_row(log, genuine, b'{"forged": true}')
    result = await log.append([genuine, make("actions.results", b"r2", offset=2)])
    assert result.already_recorded == 0
    [conflict] = result.conflicts
    assert (conflict.record, conflict.seq, conflict.differs) == (genuine, 2, ("value",))
    assert f"{TOPIC}[0] offset 1" in conflict.describe()
    assert [r.kafka_offset for r in result.rows] == [2]  # the chain goes on after the conflict
    [recorded] = await log.conflicts()
    assert (recorded.topic, recorded.kafka_offset, recorded.logged_seq, recorded.differs) == (TOPIC, 1, 2, ["value"])


async def test_a_row_inserted_ahead_makes_the_records_it_jumped_over_conflicts(make: Any) -> None:
    log = InMemoryAuditLog()
    await log.append([make("actions.results", b"r0", offset=0)])
    forged_row(log, make("actions.results", b"x", offset=5), b'{"forged": true}')
    result = await log.append([make("actions.results", b"r%d" % o, offset=o) for o in range(1, 5)])
    assert [(c.record.kafka_offset, c.seq) for c in result.conflicts] == [(1, None), (2, None), (3, None), (4, None)]
    assert "holds no row" in result.conflicts[0].describe()


async def test_a_record_before_the_pruned_chains_first_row_is_archived_not_a_conflict(make: Any) -> None:
    log = InMemoryAuditLog()
    await log.append([make("actions.results", b"r%d" % o, offset=o) for o in range(5)])
    log.rows = log.rows[3:]  # what a prune leaves: the chain kept from offset 3
    result = await log.append([make("actions.results", b"r%d" % o, offset=o) for o in range(1, 5)])
    assert (result.already_recorded, result.conflicts) == (4, [])


async def test_the_recorder_says_a_conflict_at_error_and_counts_it(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    log = InMemoryAuditLog()
    await log.append([make("actions.results", b"r0", offset=0)])
    forged_row(log, make("actions.results", b"x", offset=1), b'{"forged": true}')
    recorder = Recorder(prefix="tidegate.", log=log)
    before = REGISTRY.get_sample_value("tidegate_audit_conflicts_total", {"topic": TOPIC}) or 0.0

    class Record:
        topic, partition, offset, timestamp, timestamp_type, key, headers = TOPIC, 0, 1, 1_790_000_000_001, 0, None, ()
        value = b'{"genuine": true}'

    with caplog.at_level(logging.ERROR, logger="services.audit.handlers"):
        await recorder.record_batch([Record()])  # type: ignore[list-item]
    assert recorder.conflicts == 1
    assert REGISTRY.get_sample_value("tidegate_audit_conflicts_total", {"topic": TOPIC}) == before + 1
    [line] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "CONFLICT" in line.getMessage()
    assert f"{TOPIC}[0] offset 1" in line.getMessage()
