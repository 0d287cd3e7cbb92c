"""How the kit's consumers poll: one aiokafka consumer and one loop of the kit's own per subscription.

Nothing stands between a fetch and the kit's handling of it. A framework's consume loop (FastStream's,
until 2026-12-02) parsed every polled batch into its own message, decoding each header as UTF-8 (one
binary header from a plain Kafka client failed the whole batch, and, rewound, forever), resolved the
handler's arguments through its dependency injection and slept after every empty poll; the kit had
to patch its poll, wrap its parser and unwrap its decoder to get the records back as they came. Here
the loop hands the polled records, as aiokafka returns them, to the one handler `Bus.on_polled`
gives it, which decodes, checks, dead-letters, commits or rewinds them.

A consumer waits for records inside the fetch (`poll`: one `getmany` of up to `POLL_WAIT_MS`, which
returns as soon as a record is fetched), never in a sleep between short polls. A stop lets the batch
in hand finish (it is committed as it ends) for up to `graceful_timeout_s`, then leaves the group. A
poller with a `Window` (lanes per key, `servicekit._bus_lanes`) hands its records over and polls again
while they are handled, as long as the window has room; its stop drains the window instead.

How long the broker may hold a fetch that finds nothing follows the consumer's load (`FetchPace`):
long while it keeps up, so that an idle consumer wakes seldom, short from the moment a batch takes
long, so that no partition waits behind a held fetch of the others (see `FetchPace`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from itertools import chain
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError

from servicekit.kafka_record import KafkaRecord

__all__ = ["FETCHER_WAKE_MS", "POLL_WAIT_MS", "FetchPace", "Poller", "Window", "poll"]

log = logging.getLogger(__name__)

# How long one poll waits for records when there are none. aiokafka's `getmany` returns as soon as a
# record is fetched, so this costs no latency; it only bounds how often an idle consumer wakes up. It was 1 s: each
# consumer of each service turned its loop once a second for nothing (docs/benchmarks.md, 2026-12-07). A consumer
# whose fetch pace is busy polls only until the busy spell ends (`FetchPace.settles_in_ms`), when its idle wait returns.
POLL_WAIT_MS = 30_000
# How long aiokafka's background fetch routine sleeps when nothing wakes it (its `consumer_timeout_ms`, 200 ms by
# default). Everything it acts on wakes it itself: a fetch's answer, records taken from it, a seek, a partition resumed,
# new metadata, a rebalance (aiokafka 0.14, `Fetcher._fetch_requests_routine`). Its 200 ms woke every idle consumer five
# times a second to find each time that its fetch was still held by the broker, walking every partition it holds: most
# of the services' wake-ups at idle (docs/benchmarks.md, 2026-12-07). tests/integration/foundation/test_fetcher_wake.py
# holds an idle consumer to about one turn per fetch and an arriving record to being handled at once;
# tests/integration/foundation/test_commits.py holds a rebalance. A rewind (`seek`) wakes the routine too, but a seek on a
# node whose fetch is in flight waits for that fetch (up to fetch.max.wait, 2 s), as it did at 200 ms; no test holds it.
FETCHER_WAKE_MS = 10_000
KAFKA_ERROR_PAUSE_S = 5.0  # after a poll the broker refused (no rights, the cluster away): tried again, not spun on

Records = tuple[KafkaRecord, ...]
BatchHandler = Callable[[Records], Awaitable[None]]


async def poll(consumer: AIOKafkaConsumer, *, max_records: int, linger_ms: int = 0, wait_ms: int = POLL_WAIT_MS) -> Records:
    """The records of one poll: waited for inside the fetch, returned as soon as any came (or after `wait_ms`).

    With `linger_ms`, a batch that is not full waits that long once for more records (the audit
    writes fewer, larger transactions). Records keep their order per partition.
    """
    polled = await consumer.getmany(timeout_ms=wait_ms, max_records=max_records)
    records = tuple(chain.from_iterable(polled.values()))
    if records and linger_ms > 0 and len(records) < max_records:
        await asyncio.sleep(linger_ms / 1000)
        more = await consumer.getmany(timeout_ms=0, max_records=max_records - len(records))
        records += tuple(chain.from_iterable(more.values()))
    return records


class FetchPace:
    """How long the broker may hold this consumer's fetches: `idle_ms` while it keeps up, `busy_ms` while it does not.

    aiokafka keeps what it fetched for a partition while the consumer handles the batch before; once
    those records have waited 100 ms unhandled it fetches the consumer's other partitions without
    them, and sends that broker no other fetch until the answer comes. With nothing new there, the
    broker holds that fetch for `fetch.max.wait.ms`, and the partition whose records were just handled
    waits behind it, however much arrived for it meanwhile. A long wait saves an idle consumer CPU
    (it fetches less often), and near capacity it is what a partition waits (measured in
    docs/operations.md, the `fetch.max.wait.ms` row of the Kafka clients' table). So the wait is
    `busy_ms` from the moment a batch has been in hand for `BUSY_BATCH_S` (`watch`: a fetch of the
    others can only start during a batch that long), or one came full (a backlog), until `BUSY_FOR_S`
    passed without either; and `idle_ms` otherwise, which is also what the consumer starts with.

    The wait is aiokafka's fetcher's own attribute, read as it builds each fetch request (aiokafka
    0.14 pins it; tests/integration/foundation/test_fetch_pace.py fails if it moves). A consumer without it keeps
    its wait, with one warning.
    """

    BUSY_BATCH_S = 0.05  # half of aiokafka's 100 ms: records fetched during a batch this long may start the wait
    BUSY_FOR_S = 2.0

    def __init__(self, idle_ms: int, busy_ms: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_ms = idle_ms
        self.busy_ms = busy_ms
        self.clock = clock
        self.current_ms = idle_ms
        self._busy_until = float("-inf")
        self._unsupported = False

    def watch(self, consumer: Any) -> asyncio.TimerHandle:
        """Called as a batch is handed over: once it has been in hand `BUSY_BATCH_S`, the consumer is busy (cancel it as the batch ends).

        The fetch that can hold a partition back is built while a batch is still in hand (records
        fetched meanwhile wait their 100 ms): it must already carry the short wait, not only the
        fetches after the batch. A first long batch after an idle spell would otherwise leave a
        fetch held for the whole idle wait.
        """
        return asyncio.get_running_loop().call_later(self.BUSY_BATCH_S, self._busy, consumer)

    def after(self, consumer: Any, *, took_s: float = 0.0, full: bool = False) -> None:
        """Set `consumer`'s wait after a poll whose batch took `took_s` to handle (0 for an empty poll); `full`: it had all it may."""
        now = self.clock()
        if took_s >= self.BUSY_BATCH_S or full:
            self._busy_until = now + self.BUSY_FOR_S
        self._set(consumer, self.busy_ms if now < self._busy_until else self.idle_ms)

    def settles_in_ms(self) -> int | None:
        """While the wait is the busy one: in how many ms the busy spell ends (a poll returns then to restore the idle one)."""
        if self.current_ms == self.idle_ms:
            return None
        return max(1, math.ceil((self._busy_until - self.clock()) * 1000))

    def _busy(self, consumer: Any) -> None:
        self._busy_until = self.clock() + self.BUSY_FOR_S
        self._set(consumer, self.busy_ms)

    def _set(self, consumer: Any, wait: int) -> None:
        if wait == self.current_ms or self._unsupported:
            return
        fetcher = getattr(consumer, "_fetcher", None)
        if fetcher is None or not isinstance(getattr(fetcher, "_fetch_max_wait_ms", None), int):
            self._unsupported = True
            log.warning("this aiokafka's consumer has no fetch wait to set; its fetches keep %d ms", self.current_ms)
            return
        fetcher._fetch_max_wait_ms = wait
        self.current_ms = wait


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka's listener is untyped
    """Before a consumer gives its partitions up, `poller.before_revoke`; once it got some, `poller.on_assigned`; a log line of each.

    The log lines say what moved, for on-call.
    """

    def __init__(self, poller: Poller, consumer: AIOKafkaConsumer) -> None:
        self.poller = poller
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if not revoked:
            return
        log.info("%s: partitions revoked: %s", self.poller.name, _names(revoked))
        if self.poller.before_revoke is not None:  # aiokafka awaits this before it rejoins: the generation still holds
            await self.poller.before_revoke()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("%s: partitions assigned: %s", self.poller.name, _names(assigned) or "none")
        if assigned and self.poller.on_assigned is not None:  # awaited before the first fetch: a seek here decides where it starts
            await self.poller.on_assigned(self.consumer, assigned)


class Window(Protocol):
    """Records a poller hands over and goes on polling while they are handled (`servicekit._bus_lanes.Lanes`): how many it may hold."""

    async def room(self) -> int:
        """Wait until more records may be handed over; how many."""

    async def drain(self, grace_s: float) -> None:
        """The poller stops: wait for the records being handled (for up to `grace_s`), cancel the rest (they are read again)."""


def _names(tps: set[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps))


class Poller:
    """One Kafka consumer and the loop that hands each polled batch to one handler.

    Register the handler by calling the poller with it (as a decorator); `start` connects and starts
    the loop, `stop` ends it. `consumer` is None until started (what `Liveness` and `Bus.start` read).
    `before_revoke` runs when a rebalance takes the consumer's partitions, before it rejoins the group
    (the kit commits what it handled there: `Bus.on_polled`); `on_assigned` runs when it is given partitions, before it
    fetches from them (a consumer whose position is kept elsewhere than in the group's offsets seeks there: the audit).
    With a `window` the handler returns once it took the records over, and the loop polls again as soon as the window
    has room for more (at most that many); a stop drains the window instead of waiting for a batch.
    """

    def __init__(
        self,
        make_consumer: Callable[[], AIOKafkaConsumer],
        *,
        name: str,
        topics: Sequence[str] = (),
        pattern: str | None = None,
        max_records: int,
        linger_ms: int = 0,
        pace: FetchPace | None = None,
    ) -> None:
        if bool(topics) == (pattern is not None):
            raise ValueError("a poller reads either named topics or a pattern")
        self.name = name
        self.topics = tuple(topics)
        self.pattern = pattern
        self.max_records = max_records
        self.linger_ms = linger_ms
        self.pace = pace
        self.consumer: AIOKafkaConsumer | None = None
        self.before_revoke: Callable[[], Awaitable[None]] | None = None
        self.on_assigned: Callable[[AIOKafkaConsumer, set[TopicPartition]], Awaitable[None]] | None = None
        # Where a consumer of no group starts on some partitions (a checkpoint's `next_offset`), not at its reset point.
        self.start_at: dict[TopicPartition, int] = {}
        self.window: Window | None = None
        self._make_consumer = make_consumer
        self._handler: BatchHandler | None = None
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self._idle = asyncio.Event()  # clear while a batch is in hand

    @property
    def ended(self) -> str | None:
        """Why the loop ended while the poller was not stopped (None while it runs, or once stopped): the service is stalled."""
        task = self._task
        if not self._running or task is None or not task.done():
            return None
        if task.cancelled():
            return "cancelled"
        exc = task.exception()
        return repr(exc)[:300] if exc is not None else "the consumer was closed"

    def __call__(self, handler: BatchHandler) -> BatchHandler:
        """Hand every polled batch to `handler`."""
        if self._handler is not None:
            raise RuntimeError(f"{self.name}: a poller has one handler")
        self._handler = handler
        return handler

    async def start(self) -> None:
        """Connect, join the group (if any) and start polling."""
        if self._handler is None:
            raise RuntimeError(f"{self.name}: no handler to hand the polled batches to")
        if self._task is not None:
            return
        consumer = self._make_consumer()
        consumer.subscribe(topics=list(self.topics) or (), pattern=self.pattern, listener=_Rebalance(self, consumer))
        try:
            await consumer.start()
        except BaseException:  # refused (a right, the broker): its connections and tasks end here, not at the garbage collector
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise
        if self.start_at:
            try:
                await self._seek_start(consumer)
            except BaseException:
                with contextlib.suppress(Exception):
                    await consumer.stop()
                raise
        self.consumer = consumer
        self._running = True
        self._idle.set()
        self._task = asyncio.get_running_loop().create_task(self._run(consumer), name=f"poll:{self.name}")

    async def _seek_start(self, consumer: AIOKafkaConsumer, timeout_s: float = 30.0) -> None:
        """Once the partitions of `start_at` are assigned (a consumer of no group takes every partition), seek each there."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not set(self.start_at) <= consumer.assignment():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{self.name}: {_names(set(self.start_at))} not assigned after {timeout_s}s")
            await asyncio.sleep(0.02)
        for tp, offset in self.start_at.items():
            consumer.seek(tp, offset)

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        assert self._handler is not None
        while self._running:
            try:
                room = self.max_records if self.window is None else min(self.max_records, await self._room(consumer))
                settles_ms = self.pace.settles_in_ms() if self.pace is not None else None
                wait_ms = POLL_WAIT_MS if settles_ms is None else min(POLL_WAIT_MS, settles_ms)
                records = await poll(consumer, max_records=room, linger_ms=self.linger_ms, wait_ms=wait_ms)
            except ConsumerStoppedError:
                return
            except Exception as exc:  # the broker refused, or the client's own bug or state: never the end, in silence or not
                trace = not isinstance(exc, KafkaError)  # a Kafka error says what it is; anything else needs its stack
                log.error("%s: polling failed (%r); polling again in %.0fs", self.name, exc, KAFKA_ERROR_PAUSE_S, exc_info=trace)
                await asyncio.sleep(KAFKA_ERROR_PAUSE_S)
                continue
            if not records:
                if self.pace is not None:
                    self.pace.after(consumer)
                continue
            self._idle.clear()
            started = self.pace.clock() if self.pace is not None else 0.0
            watch = self.pace.watch(consumer) if self.pace is not None else None
            try:
                await self._handler(records)
            except Exception:  # the batch is rewound (`Bus.on_polled`) and read again; the loop must not die
                log.exception("%s: a batch of %d records failed; it is read again", self.name, len(records))
            finally:
                self._idle.set()
                if watch is not None:
                    watch.cancel()
            if self.pace is not None:
                self.pace.after(consumer, took_s=self.pace.clock() - started, full=len(records) >= room)

    async def _room(self, consumer: AIOKafkaConsumer) -> int:
        """How many records the window may take now, once it has room; a wait for it counts as a batch in hand (`FetchPace`)."""
        assert self.window is not None
        if self.pace is None:
            return await self.window.room()
        started, watch = self.pace.clock(), self.pace.watch(consumer)
        try:
            return await self.window.room()
        finally:
            watch.cancel()
            if (took_s := self.pace.clock() - started) >= self.pace.BUSY_BATCH_S:
                self.pace.after(consumer, took_s=took_s)

    async def stop(self, *, graceful_timeout_s: float = 10.0) -> None:
        """Stop polling: the batch in hand (or the window's records) finishes, for up to `graceful_timeout_s`; then leave the group."""
        self._running = False
        task, self._task = self._task, None
        if task is not None:
            if not self._idle.is_set():  # a batch in hand
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), graceful_timeout_s)
            if self.window is not None:
                await self.window.drain(graceful_timeout_s)
            task.cancel()  # waiting in a fetch, or past the grace: its records were not committed, they are read again
            await asyncio.wait([task])  # ended, however it ended (a loop that died was reported by `ended`)
            if not task.cancelled() and task.exception() is not None:
                log.error("%s: the consumer loop had ended: %r", self.name, task.exception())
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            await consumer.stop()
