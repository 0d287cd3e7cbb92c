"""The planner's database restored from a backup: the events it handled since, handed to it again in the order they happened.

A restored planner holds its tasks as the backup did, while its consumer group has committed offsets past every event it
handled since: started so, a task that moved on since would wait for answers it already had. `tidegate db catch-up`
hands those events to the planner's own handlers (`replay`), offline: every event of the four topics it reads, from the
newest row its database holds (less `CLOCK_SKEW_S`, or an earlier `--since`) up to the offsets its group has committed
(beyond is its backlog, left to it), verified as its consumers verify them, merged by the time the broker appended them.
Read side by side instead, a human's answer on `approvals` (or the policy's decision after a grant) could come before the
result that moves the task to the step it answers, change nothing, and be passed by: proposed again, the step would get
the policy's recorded escalation only, and wait for a person who had answered.

What the handlers make is on the bus already (the same action ids, `action_ids`): it is signed and stored as the planner
stores it, then dropped, never published again. An event applied before the backup is in `planner.processed_events`
and skipped; the group's offsets stay where they are. Refused while a planner runs (its group has members).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from schemas import Envelope
from servicekit import EventOutlet, KitSettings, Reject, ToolCatalog, deployment_authority, kafka_options, service_key
from servicekit.bus_history import CLOCK_SKEW_S, SignedEvent, group_offsets, signed_events
from services.planner.app import NAME, READS, PlannerDeps, build, consumer_group, routes
from services.planner.settings import PlannerSettings

__all__ = ["READS", "Replayed", "consumer_group", "in_order", "replay"]

log = logging.getLogger(__name__)


@dataclass
class Replayed:
    """What the replay handed the planner: the events by partition (first and last offset, how many), what it skipped."""

    since_ms: int | None  # where it read from (None: the earliest record kept)
    partitions: dict[tuple[str, int], tuple[int, int, int]] = field(default_factory=dict)
    handled: int = 0
    refused: int = 0  # records that do not verify: the planner's consumers dead-lettered them, and so never handled them
    rejected: int = 0  # events its handlers refuse (a task id reused): dead-lettered when first read
    tasks_moved: int = 0  # tasks whose stored state the replay changed


def in_order(events: list[tuple[str, SignedEvent]]) -> list[tuple[str, SignedEvent]]:
    """(topic name, event) pairs in the order the broker appended them (`LogAppendTime`), then as `READS` lists the topics.

    Within a millisecond, by topic, partition and offset; an event of a topic the broker does not stamp, by its own `time`.
    """

    def at(pair: tuple[str, SignedEvent]) -> tuple[int, int, int, int]:
        name, e = pair
        ms = e.appended_ms if e.appended_ms is not None else int(e.event.time.timestamp() * 1000)
        return (ms, READS.index(name), e.partition, e.offset)

    return sorted(events, key=at)


async def replay(
    kit: KitSettings,
    pool: asyncpg.Pool,
    settings: PlannerSettings | None = None,
    *,
    since_ms: int | None = None,
    client_options: dict[str, Any] | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> Replayed:
    """Hand the planner again, in order, the events its restored database has not seen and its group had handled (the module).

    `pool`: a login that may write the planner's schema (the catch-up's). Read as the planner's own login (`client_options`
    overrides it: tests). `GroupInUse` while a planner runs. Idempotent: a second run changes nothing.
    """
    newest = await pool.fetchval("SELECT max(updated_at) FROM planner.tasks WHERE topic_prefix = $1", kit.topic_prefix)
    at = None if newest is None else int((newest.timestamp() - CLOCK_SKEW_S) * 1000)
    if since_ms is not None:  # a planner behind the bus at the backup had not handled all that came before its newest row
        at = since_ms if at is None else min(at, since_ms)
    options = client_options if client_options is not None else kafka_options(kit, NAME)
    group = consumer_group(kit.topic_prefix)
    handled = await group_offsets(kit.kafka_bootstrap, kit.topic_prefix, list(READS), group, client_options=options)
    done = Replayed(since_ms=at)
    authority = deployment_authority(kit, ToolCatalog.load(*kit.tool_dirs), history=True)

    def refused(record: Any, why: str) -> None:
        done.refused += 1

    events: list[tuple[str, SignedEvent]] = []
    for name in READS:
        if name in handled:
            read = signed_events(
                kit.kafka_bootstrap, kit.topic_prefix, name, authority,
                since_ms=at, client_options=options, refused=refused, until=handled[name],
            )  # fmt: skip
            events += [(name, e) async for e in read]
    key = service_key(kit, NAME)
    planner = build(kit, settings, deps=PlannerDeps(pool=pool, out=EventOutlet(_nowhere, signer=key))).planner
    started = await pool.fetchval("SELECT clock_timestamp()")
    handlers = routes(planner)
    for name, event in in_order(events):
        try:
            await handlers[name](event.event)
        except Reject as exc:  # refused when first read too (its consumer dead-lettered it): nothing to do again
            log.info("planner replay: %s[%d]@%d refused again: %s", event.topic, event.partition, event.offset, exc)
            done.rejected += 1
        where = (name, event.partition)
        first, _, count = done.partitions.get(where, (event.offset, event.offset, 0))
        done.partitions[where] = (first, event.offset, count + 1)
        done.handled += 1
        if done.handled % 1000 == 0:
            say(f"  planner: {done.handled:,}/{len(events):,} events handed again")
    done.tasks_moved = await pool.fetchval(
        "SELECT count(*) FROM planner.tasks WHERE topic_prefix = $1 AND updated_at >= $2", kit.topic_prefix, started
    )
    return done


async def _nowhere(topic: str, event: Envelope) -> None:
    """What the replay's handlers publish goes nowhere: it is on the bus already."""
