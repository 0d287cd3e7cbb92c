"""Records handled in lanes, one per Kafka key, while the consumer goes on polling: one slow record holds up only its own key.

A subscription with `concurrency` > 1 (`Bus.consume`) hands each polled batch to `Lanes` and polls again (`Poller.window`):
a key's records are handled one after the other, each once the one before it is handled and what it published is
acknowledged; records of different keys overlap, at most `concurrency` handlers at a time; at most `limit` records are
held unfinished, and the consumer polls no more until one is done (backpressure). Before, the next batch was polled only
once the whole batch was handled, so one slow tool call held every other task's call behind it for all its attempts.

Offsets move only over a contiguous prefix (`servicekit.commits.Unfinished`): a partition is committed up to its first
record not yet handled, never past it, so a crash reads that record and everything after it again (every handler is
idempotent; the executor's claims make a redelivered call wait for the one in flight and answer from its record). A
record whose handling raised (a delivery that failed) is handled again in its lane, uncommitted meanwhile, as a rewound
batch was. A rebalance waits for the records being handled (for up to `REVOKE_GRACE_S`), commits the prefix and forgets
the rest: records not started are not started, those still running are left to the partitions' next owner. A stop starts
no record, waits for those being handled for the stop's grace, and as soon as only parked handlers are left
(`servicekit.parking`) cancels them: their records are left to the next process.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any, TypeAlias

from servicekit._bus_base import Handler, log
from servicekit.commits import Commits, Unfinished
from servicekit.deliveries import batch_commits
from servicekit.kafka_record import KafkaRecord
from servicekit.parking import Parking, parking

__all__ = ["REVOKE_GRACE_S", "Lanes"]

REVOKE_GRACE_S = 10.0  # how long a rebalance waits for the records being handled before it gives their partitions up
AGAIN_PAUSE_S = 1.0  # before a record whose handling raised is handled again (a failed delivery: the broker away)

Record: TypeAlias = KafkaRecord


class Lanes:
    """One consumer's records in flight: handed over as polled (`take`), handled in lanes per key, committed over their handled prefix.

    `bus` is the `Bus` (its `handle_record`, `acknowledged_at_end`, `stopping`, `positions`, `liveness`); `routes` maps a full
    topic name to its catalog name and handler. It is the poller's `Window`: `room` and `drain`.
    """

    def __init__(self, bus: Any, routes: dict[str, tuple[str, Handler]], *, concurrency: int, limit: int, commits: Commits) -> None:
        self.bus = bus
        self.routes = routes
        self.limit = limit
        self.commits = commits
        self.unfinished = Unfinished()
        self.consumer: Any = None
        self._committing = False  # whether `consumer`'s offsets are committed (`Commits.commits_for`)
        self._slots = asyncio.Semaphore(concurrency)
        self._lanes: dict[bytes | None, deque[Record]] = {}  # each key's records not started yet; a key with a lane has its task
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiters: list[asyncio.Future[Any]] = []  # woken whenever a record is done or a handler ends (`_changed`)
        self._revoking = False  # a rebalance is taking the partitions: no record starts
        self.parking = Parking(running=0, stopping=bus.stopping)  # `running`: records started and not done

    async def take(self, consumer: Any, records: Sequence[Record]) -> None:
        """Hand polled `records` over: each joins its key's lane (started if it has none); returns at once."""
        if consumer is not self.consumer:
            self.consumer, self._committing = consumer, Commits.commits_for(consumer)
        self.unfinished.polled(records)
        for record in records:
            lane = self._lanes.get(record.key)
            if lane is None:
                lane = self._lanes[record.key] = deque()
                task = asyncio.get_running_loop().create_task(self._run(record.key, lane), name=f"lane:{self.bus.service}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            lane.append(record)

    async def room(self) -> int:
        """Wait until fewer than `limit` records are held unfinished; how many more may be taken."""
        while self.unfinished.count >= self.limit:
            await self._changed()
        return self.limit - self.unfinished.count

    async def revoked(self) -> None:
        """A rebalance takes the partitions: wait for the records being handled (up to `REVOKE_GRACE_S`), commit, forget the rest."""
        self._revoking = True
        try:
            await self._settled(REVOKE_GRACE_S, parked_end=False)
            if self.parking.running:
                log.info(
                    "%s: %d record(s) still handled as the partitions move: read again by their next owner",
                    self.bus.service,
                    self.parking.running,
                )
            self.unfinished.forget()  # what was not started never starts; what still runs moves no offset
        finally:
            self._revoking = False
        await self.commits.flush()

    async def drain(self, grace_s: float) -> None:
        """The consumer stops (`Bus.stopping` is set: no record starts): wait for those being handled, then cancel what is left."""
        await self._settled(grace_s, parked_end=True)
        parked = self.parking.parked
        while self._tasks:  # and any lane a last poll started meanwhile
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if parked:
            log.info(
                "%s: %d handler(s) parked while the process stops: their records are left to the next process", self.bus.service, parked
            )

    async def _settled(self, grace_s: float, *, parked_end: bool) -> None:
        """Wait until no record is being handled, or (`parked_end`) only parked handlers are left, for up to `grace_s`."""
        deadline = asyncio.get_running_loop().time() + grace_s
        while self.parking.running and not (parked_end and self.parking.only_parked.is_set()):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            parked: asyncio.Future[Any] = asyncio.ensure_future(self.parking.only_parked.wait())  # `park` sets it, nothing else here
            try:
                await asyncio.wait({self._changed(), parked}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                parked.cancel()

    def _changed(self) -> asyncio.Future[Any]:
        """A future done at the next change: a record done, a handler ended or parked."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _run(self, key: bytes | None, lane: deque[Record]) -> None:
        """One key's lane: its records one after the other, each done (and its offset free to move) before the next starts."""
        parking.set(self.parking)  # this task's own context: `servicekit.parking.park` counts its handler as parked
        # Where `once_delivered_together` gathers its items: the consumer's commits, when they are gathered over an interval.
        batch_commits.set(self.commits if self.commits.interval_s > 0 and self._committing else None)
        try:
            while lane and not self.bus.stopping.is_set():
                await self._handle(lane.popleft())
        finally:
            if self._lanes.get(key) is lane:
                del self._lanes[key]

    async def _handle(self, record: Record) -> None:
        """Handle `record` until it is handled or dead-lettered and what it published acknowledged, then mark it done.

        Not started while the process stops or a rebalance takes its partition: it is left uncommitted, to the next
        process or the partition's next owner.
        """
        topic, handler = self.routes[record.topic]
        while True:
            started = False
            try:
                # The slot is the handler's; the acknowledgements are awaited after it, the record not done until then.
                async with self.bus.acknowledged_at_end(), self._slots:
                    if self.bus.stopping.is_set() or self._revoking or not self.unfinished.holds(record):
                        return
                    started = True
                    self.parking.running += 1
                    await self.bus.handle_record(topic, record, handler)
                await self._done(record)  # before the handler counts as ended: a stop waits for its commit
                return
            except Exception:  # not handled: handled again, in its lane, uncommitted meanwhile (as a rewound batch was)
                log.exception("%s: handling %s@%d failed; it is handled again", self.bus.service, record.topic, record.offset)
            finally:
                if started:
                    self.parking.ended()
                    self._notify()
            await asyncio.sleep(AGAIN_PAUSE_S)

    async def _done(self, record: Record) -> None:
        """`record` is handled: its partition's handled prefix may move (marked for `wait_caught_up`, committed in time)."""
        moved = self.unfinished.done(record)
        self.bus.liveness.progressed()
        if moved is None:
            return
        tp, offset = moved
        position = (tp.topic, tp.partition)
        self.bus.positions[position] = max(self.bus.positions.get(position, 0), offset)
        if self._committing:
            await self.commits.reached(self.consumer, {tp: offset})
