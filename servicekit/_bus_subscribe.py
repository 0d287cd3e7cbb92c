"""The bus's subscriptions and its consumers: which records reach which handler, and where a consumer's offsets move.

`Bus.consume` subscribes a handler; as the bus starts its subscriptions become consumers, one per
consumer group (`Bus.poller`, `servicekit.polling`), whose polled batches are handled one record at a
time or in lanes, one per Kafka key. `Bus.on_polled` is the one place where a consumer's offsets
move: committed once a batch is handled (`servicekit.commits`), rewound if it raised.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from servicekit._bus_acks import Acknowledging
from servicekit._bus_base import Handler
from servicekit._bus_handle import Handling
from servicekit.commits import Commits, rewind
from servicekit.deliveries import batch_commits
from servicekit.parking import Parked, Parking, park, parking
from servicekit.polling import FetchPace, Poller
from servicekit.producer import servers

__all__ = ["Subscribing", "Subscription"]


@dataclass(frozen=True)
class Subscription:
    """One `Bus.consume`: a catalog topic, its handler, its consumer group, and how its consumer reads."""

    topic: str
    handler: Handler
    group_id: str | None
    max_records: int
    concurrency: int
    from_latest: bool


async def _unless_only_parked(work: asyncio.Future[Any], lanes: Parking) -> None:
    """Await `work` (a batch's lanes), unless only parked lanes are left while the process stops: then cancel them, raise `Parked`."""
    only_parked = asyncio.ensure_future(lanes.only_parked.wait())
    try:
        await asyncio.wait({work, only_parked}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        only_parked.cancel()
        cut = not work.done()
        if cut:  # only parked lanes left, or this batch cancelled (the stop's grace ran out: that goes on as it was)
            work.cancel()
            await asyncio.wait([work])
            work.exception()  # the lanes' cancellation: retrieved, not reported
    if not cut:
        work.result()  # a lane's error, raised as `gather` raises it
        return
    raise Parked(f"{lanes.parked} handler(s) parked while the process stops: their records are left to the next process")


class Subscribing(Acknowledging, Handling):
    """`Bus.consume`, `Bus.poller`, `Bus.on_polled`, `Bus.handle_in_lanes`: subscriptions made into consumers."""

    def consume(
        self,
        topic: str,
        handler: Handler,
        *,
        group_id: str | None,
        max_records: int = 200,
        concurrency: int = 1,
        from_latest: bool = False,
    ) -> None:
        """Subscribe `handler` to catalog topic `topic` in consumer group `group_id`.

        Subscriptions of one group share one Kafka consumer (one group per service, as the design
        says), created when the bus starts. With `group_id=None` the topic is read by this process
        alone, without committing offsets: from the beginning (how every service reads `control`),
        or from the end with `from_latest` (replies that matter only to calls waiting now); such
        topics share one consumer too, one for those read from the beginning and one for the rest.

        With `concurrency` > 1 a polled batch is handled in lanes, one per Kafka key (the task id):
        a key's records stay in order, records of different keys overlap, at most `concurrency` at
        a time. Offsets are still committed only after the whole batch is handled.
        """
        if self._started:
            raise RuntimeError("subscribe before the bus starts")
        self.subscriptions.append(topic)
        self._routes.append(Subscription(topic, handler, group_id, max_records, concurrency, from_latest))

    def _register(self) -> None:
        """One Kafka consumer per group; one for the topics read alone from the beginning, one for those read from the end.

        Each consumer fetches, and while idle wakes, on its own; topics read alone need no consumer each.
        """
        groups: dict[str | bool, list[Subscription]] = {}
        for route in self._routes:
            groups.setdefault(route.from_latest if route.group_id is None else route.group_id, []).append(route)
        for group, routes in groups.items():
            self._subscribe(routes, group if isinstance(group, str) else None)

    def _subscribe(self, group_routes: list[Subscription], group_id: str | None) -> None:
        routes = {self.topic(r.topic): (r.topic, r.handler) for r in group_routes}
        slots = asyncio.Semaphore(max(r.concurrency for r in group_routes))
        lanes = any(r.concurrency > 1 for r in group_routes)

        from_latest = any(r.from_latest for r in group_routes)
        title = f"{self.service}:{','.join(t for t, _ in routes.values())}"
        max_records = max(r.max_records for r in group_routes)
        poller = self.poller(title, topics=list(routes), group_id=group_id, max_records=max_records, from_latest=from_latest)
        if from_latest:
            self._from_latest.append((poller, sorted(routes)))

        async def handle(records: Sequence[ConsumerRecord[Any, Any]]) -> None:
            if lanes:
                await self.handle_in_lanes(records, routes, slots)
                return
            async with self.acknowledged_at_end():
                for record in records:
                    topic, handler = routes[record.topic]
                    await self.handle_record(topic, record, handler)
            for record in records:  # handled, and what they published acknowledged
                self.mark_handled(record)

        self.on_polled(poller, handle, name=title)

    def poller(
        self,
        name: str,
        *,
        group_id: str | None,
        max_records: int,
        topics: Sequence[str] = (),
        pattern: str | None = None,
        linger_ms: int = 0,
        from_latest: bool = False,
        fetch_min_bytes: int = 1,
        fetch_max_wait_ms: int | None = None,
        max_partition_fetch_bytes: int | None = None,
        metadata_max_age_ms: int = 300_000,
    ) -> Poller:
        """A consumer of the full topic names `topics` (or those matching `pattern`) in `group_id`, started with the bus.

        Its offsets are the kit's to commit (`on_polled`), never aiokafka's on a timer. A group's
        partitions are spread round robin over its members. With `fetch_min_bytes` the broker holds
        each fetch until that much is there, or `fetch_max_wait_ms` passed (Kafka's `fetch.min.bytes`
        and `fetch.max.wait.ms`; unset: the bus's, which with one byte only bounds how often an idle
        consumer fetches, and the bus's busy wait replaces it while the consumer's batches take long:
        `FetchPace`); `metadata_max_age_ms` bounds how late a pattern finds a new topic, and
        `max_partition_fetch_bytes` (unset: the bus's) what it holds fetched of each partition.
        """
        idle_ms = self.fetch_max_wait_ms if fetch_max_wait_ms is None else fetch_max_wait_ms
        paced = fetch_max_wait_ms is None and fetch_min_bytes == 1 and self.busy_fetch_max_wait_ms < idle_ms
        options: dict[str, Any] = {
            "bootstrap_servers": servers(self.bootstrap),
            "client_id": f"tidegate-{self.service}",
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "latest" if from_latest else "earliest",
            "fetch_min_bytes": fetch_min_bytes,
            "fetch_max_wait_ms": idle_ms,
            "max_partition_fetch_bytes": self.max_partition_fetch_bytes if max_partition_fetch_bytes is None else max_partition_fetch_bytes,
            "metadata_max_age_ms": metadata_max_age_ms,
            "partition_assignment_strategy": (RoundRobinPartitionAssignor,),
            **self.client_options(),
        }
        poller = Poller(
            functools.partial(AIOKafkaConsumer, **options),
            name=name,
            topics=topics,
            pattern=pattern,
            max_records=max_records,
            linger_ms=linger_ms,
            pace=FetchPace(idle_ms, self.busy_fetch_max_wait_ms) if paced else None,
        )
        self.pollers.append(poller)
        self.liveness.watch(poller)
        return poller

    def on_polled(self, poller: Poller, handle: Callable[[Sequence[ConsumerRecord[Any, Any]]], Awaitable[None]], *, name: str) -> None:
        """Hand `poller`'s polled batches to `handle`: the one place where a consumer's offsets move.

        `handle` returns once every record is handled or dead-lettered and what it published is
        acknowledged (and marks them handled); the batch's offsets are then committed, gathered over
        `commit_interval_s` (`servicekit.commits`), and at the latest when a rebalance takes the
        partitions away. If it raises, the batch is rewound (each partition seeks back to its first
        record) and read again.
        """
        commits = Commits(self.commit_interval_s, name=name)
        self._commits.append(commits)
        poller.before_revoke = commits.flush  # what is handled is committed before a rebalance moves its partitions

        @poller
        async def _on_batch(records: Sequence[ConsumerRecord[Any, Any]]) -> None:
            consumer = poller.consumer
            token = batch_commits.set(commits if commits.interval_s > 0 and Commits.commits_for(consumer) else None)
            try:
                await handle(records)
            except BaseException:
                rewind(consumer, records)
                raise
            finally:
                batch_commits.reset(token)
            await commits.handled(consumer, records)

    async def handle_in_lanes(self, records: Sequence[Any], routes: dict[str, tuple[str, Handler]], slots: asyncio.Semaphore) -> None:
        """Handle one polled batch: records of one key in order, different keys concurrently within `slots`."""
        by_key: dict[bytes | None, list[Any]] = {}
        for record in records:
            by_key.setdefault(record.key, []).append(record)

        lanes = Parking(running=len(by_key), stopping=self.stopping)

        async def run(lane: list[Any]) -> None:
            try:
                for record in lane:
                    topic, handler = routes[record.topic]
                    lanes.waiting += 1
                    lanes.check()
                    try:
                        await slots.acquire()
                    finally:
                        lanes.waiting -= 1
                    try:
                        if lanes.parked and self.stopping.is_set():
                            await park()  # a handler of this batch parked: none starts any more (`servicekit.parking`)
                        await self.handle_record(topic, record, handler)
                    finally:
                        slots.release()
            finally:
                lanes.lane_done()

        token = parking.set(lanes)  # the lanes' tasks, made below, see it (`servicekit.parking.park`)
        try:
            async with self.acknowledged_at_end():
                await _unless_only_parked(asyncio.gather(*(run(lane) for lane in by_key.values())), lanes)
        finally:
            parking.reset(token)
        for record in records:  # only now: lanes finish out of order
            self.mark_handled(record)
