"""The bus's subscriptions and its consumers: which records reach which handler, and where a consumer's offsets move.

`Bus.consume` subscribes a handler; as the bus starts its subscriptions become consumers, one per
consumer group (`Bus.poller`, `servicekit.polling`), whose polled batches are handled one record at a
time, or in lanes, one per Kafka key, while the consumer goes on polling (`servicekit._bus_lanes`).
`Bus.on_polled` is where a batch's offsets move: committed once the batch is handled
(`servicekit.commits`), rewound if it raised; `Bus.in_lanes` is where the lanes' offsets move.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from servicekit._bus_acks import Acknowledging
from servicekit._bus_base import Handler
from servicekit._bus_handle import Handling
from servicekit._bus_lanes import Lanes
from servicekit.commits import Commits, rewind
from servicekit.deliveries import batch_commits
from servicekit.kafka_record import KafkaRecord
from servicekit.polling import FETCHER_WAKE_MS, FetchPace, Poller
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


class Subscribing(Acknowledging, Handling):
    """`Bus.consume`, `Bus.poller`, `Bus.on_polled`, `Bus.in_lanes`: subscriptions made into consumers."""

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

        With `concurrency` > 1 records are handled in lanes, one per Kafka key (the task id), while
        the consumer goes on polling (`servicekit._bus_lanes`): a key's records stay in order (each
        starts once the one before it is handled), records of different keys overlap, at most
        `concurrency` handlers at a time and at most `max_records` records held unhandled (polling
        waits for room). A partition's offset is committed up to its first record not yet handled,
        never past it: one slow record holds up its own key's records and its partition's commit,
        not the other keys' handling.
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
        concurrency = max(r.concurrency for r in group_routes)

        from_latest = any(r.from_latest for r in group_routes)
        title = f"{self.service}:{','.join(t for t, _ in routes.values())}"
        max_records = max(r.max_records for r in group_routes)
        poller = self.poller(title, topics=list(routes), group_id=group_id, max_records=max_records, from_latest=from_latest)
        if from_latest:
            self._from_latest.append((poller, sorted(routes)))
        if concurrency > 1:
            self.in_lanes(poller, routes, concurrency=concurrency, name=title)
            return

        async def handle(records: Sequence[KafkaRecord]) -> None:
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
            "consumer_timeout_ms": FETCHER_WAKE_MS,  # its fetch routine wakes on what it acts on, not five times a second
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

    def on_polled(self, poller: Poller, handle: Callable[[Sequence[KafkaRecord]], Awaitable[None]], *, name: str) -> None:
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
        async def _on_batch(records: Sequence[KafkaRecord]) -> None:
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

    def in_lanes(self, poller: Poller, routes: dict[str, tuple[str, Handler]], *, concurrency: int, name: str) -> Lanes:
        """Hand `poller`'s records to lanes per key that it goes on polling beside (`servicekit._bus_lanes`): where their offsets move.

        Each partition's offset is committed up to its first record not yet handled (gathered over
        `commit_interval_s`, `servicekit.commits`); a rebalance waits for the records being handled, commits, and
        forgets the rest; a stop drains the lanes (`Lanes.drain`).
        """
        commits = Commits(self.commit_interval_s, name=name)
        self._commits.append(commits)
        lanes = Lanes(self, routes, concurrency=concurrency, limit=poller.max_records, commits=commits)
        poller.window = lanes
        poller.before_revoke = lanes.revoked

        @poller
        async def _take(records: Sequence[KafkaRecord]) -> None:
            await lanes.take(poller.consumer, records)

        return lanes
