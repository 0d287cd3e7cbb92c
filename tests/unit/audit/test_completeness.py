"""The audit log names the offsets it has no row for, as ranges (the in-memory twin, as the PostgreSQL query does)."""

from __future__ import annotations

import json

from services.audit.completeness import Missing
from services.audit.records import observe
from services.audit.repository import InMemoryAuditLog


async def test_offset_gaps_are_ranges_inside_the_window() -> None:
    log = InMemoryAuditLog()
    records = [
        observe(topic="p.tasks", partition=0, offset=i, timestamp_ms=1_790_000_000_000 + i, timestamp_type=0, key=None,
                value=json.dumps({"n": i}).encode(), headers=[], prefix="p.")
        for i in (0, 1, 2, 5, 6, 9)
    ]  # fmt: skip
    await log.append(records)
    assert await log.offset_gaps("p.tasks", 0, 0, 12) == [(3, 4), (7, 8), (10, 11)]
    assert await log.offset_gaps("p.tasks", 0, 5, 7) == []
    assert await log.offset_gaps("p.tasks", 1, 0, 2) == [(0, 1)]
    assert await log.offset_gaps("p.tasks", 0, 4, 4) == []


def test_a_missing_range_reads_as_a_sentence() -> None:
    one = Missing(topic="p.tasks", partition=0, first=4, last=4, count=1, at_end=False)
    tail = Missing(topic="p.tasks", partition=2, first=7, last=9, count=3, at_end=True)
    assert one.describe() == "p.tasks[0] offset 4: 1 record(s) not in the audit log"
    assert tail.describe().startswith("p.tasks[2] offsets 7..9: 3 record(s) not in the audit log (the newest")
