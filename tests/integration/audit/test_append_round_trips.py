"""The audit's append path counted on the real database: a polled batch is five round trips, whatever its chains hold.

Every record of every topic passes through it, so each round trip it saves is saved on every poll: BEGIN, the writer role
with the chains' locks, one read of their heads and of the event ids already logged, the COPY, COMMIT.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from statements import Statements, counting_pool

import schemas as s
from servicekit import KitSettings
from servicekit.dbroles import service_database_url
from services.audit.records import observe
from services.audit.repository import PostgresAuditLog
from services.audit.rows import Observed

ROUND_TRIPS = 4  # BEGIN, the role and the locks, the read, COMMIT; the COPY is a fifth, which asyncpg's query logger does not see


def _records(prefix: str, events: list[tuple[str, int, int, s.Envelope]]) -> list[Observed]:
    """(topic, partition, offset, event) as the audit's consumer observes them."""
    return [
        observe(topic=prefix + topic, partition=partition, offset=offset, timestamp_ms=1_790_000_000_000 + offset, timestamp_type=0,
                key=event.key, value=s.encode(event), headers=[], prefix=prefix)
        for topic, partition, offset, event in events
    ]  # fmt: skip


def _task(n: int) -> s.TaskSubmitted:
    data = s.TaskSubmittedData(task_id=f"t-{n}", tenant_id="acme", workflow="w", input={}, requested_by="alice")
    return s.TaskSubmitted.build(data, source="tidegate/test")


async def test_a_batch_is_five_round_trips_on_new_chains_on_its_heads_and_behind_them(kit: KitSettings, infra: Any) -> None:
    """As the operator counting what the audit sends PostgreSQL per poll, and as the auditor reading what it kept."""
    statements = Statements()
    pool = await counting_pool(service_database_url(kit, "audit"), statements, max_size=1, reset_session=False)  # as the service's
    log = PostgresAuditLog(pool)
    prefix = kit.topic_prefix
    events = [_task(n) for n in range(6)]
    try:
        await log.append(_records(prefix, [("tasks", 9, 0, _task(99))]))  # asyncpg looks up the array types once per connection
        statements.counted()

        await log.append(_records(prefix, [("tasks", p, o, events[2 * o + p]) for o in range(2) for p in range(2)]))  # new chains
        fresh = statements.counted()
        await log.append(_records(prefix, [("tasks", 0, 2, events[4]), ("tasks", 1, 2, events[5])]))  # on their heads
        next_ = statements.counted()
        # Behind the heads (a redelivery of offsets 1 and 2), and event 0 published again at a new offset: a duplicate.
        await log.append(_records(prefix, [("tasks", 0, 1, events[2]), ("tasks", 0, 2, events[4]), ("tasks", 0, 3, events[0])]))
        behind = statements.counted()
    finally:
        await pool.close()
    print(f"audit round trips per polled batch: new chains {fresh}, on the heads {next_}, behind them {behind}")
    assert (fresh, next_, behind) == (ROUND_TRIPS, ROUND_TRIPS, ROUND_TRIPS)

    conn = await asyncpg.connect(infra.admin_database_url)
    try:
        rows = await conn.fetch(
            "SELECT partition, kafka_offset, seq, event_id, duplicate FROM audit.log WHERE topic = $1 AND partition < 2"
            " ORDER BY partition, seq",
            prefix + "tasks",
        )
    finally:
        await conn.close()
    kept = [(r["partition"], r["kafka_offset"], r["seq"], r["event_id"], r["duplicate"]) for r in rows]
    assert kept == [
        (0, 0, 1, events[0].id, False),
        (0, 1, 2, events[2].id, False),
        (0, 2, 3, events[4].id, False),
        (0, 3, 4, events[0].id, True),  # the redelivered offsets 1 and 2 are not logged twice; event 0 again is flagged
        (1, 0, 1, events[1].id, False),
        (1, 1, 2, events[3].id, False),
        (1, 2, 3, events[5].id, False),
    ]
