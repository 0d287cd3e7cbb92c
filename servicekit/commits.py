"""Offsets committed once their records are handled, gathered over a short interval instead of one commit per poll.

A polled batch's offsets become committable only when every record in it is handled or dead-lettered
(and what its handlers published is acknowledged): that rule is unchanged. What changes is when the
commit is sent. At a low, steady rate each poll returns one record, and committing after each one
costs as much as handling it: an OffsetCommit request per poll is ~0.45 ms of a bare aiokafka hop's
~1.6 ms of CPU per message, and its round trip delays the next poll by ~3.6 ms (`bench.bare_hop`
without it). So a consumer's handled offsets are committed at most every `interval_s`: by the batch
that finds the last commit that old, or by a flusher shortly after the last batch.

What a crash leaves uncommitted (at most `interval_s` of handled records, beside the batch in flight)
is read again on restart, as an in-flight batch always was: every handler is idempotent
(docs/reliability.md). A graceful stop commits everything handled (`closing`), and so does a consumer
whose partitions a rebalance takes (`flush`, called before it rejoins the group: `Bus.on_polled`); a
batch still in hand then, or a commit refused because the group moved on, leaves its records to the
partition's new owner, which reads them again.

A consumer handling records in lanes (`servicekit._bus_lanes`) finishes them out of order: its partitions'
offsets move only over their handled prefix (`Unfinished`: up to the first record not yet handled), through `reached`.

Bookkeeping of delivered events (`servicekit.once_delivered_together`: the planner deletes the outbox
entries the broker has) is gathered the same way, `before_commit`, and done once, right before the
offsets are committed: at a steady rate it was a statement per event. So an offset is never committed
before that bookkeeping is done; if it fails, neither is, and both are tried again at the next flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from servicekit.kafka_record import KafkaRecord

__all__ = ["Commits", "Unfinished", "rewind"]

log = logging.getLogger(__name__)
_RETRY_S = 0.05  # the least a failed commit waits before it is tried again

Bookkeeping = Callable[[list[Any]], Awaitable[Any]]


def rewind(consumer: Any, records: Sequence[KafkaRecord]) -> None:
    """Seek each partition of a batch that was not handled back to its first record, so that the next poll reads it again."""
    earliest: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        if tp not in earliest or record.offset < earliest[tp]:
            earliest[tp] = record.offset
    if isinstance(consumer, AIOKafkaConsumer):  # a consumer not started, or a test's stand-in: nothing to rewind
        for tp, offset in earliest.items():
            consumer.seek(tp, offset)


@dataclass
class Commits:
    """One consumer's handled offsets, committed at most every `interval_s` (0: after every batch)."""

    interval_s: float
    name: str = "consumer"
    _pending: dict[TopicPartition, int] = field(default_factory=dict, init=False)
    _consumer: AIOKafkaConsumer | None = field(default=None, init=False)
    _last: float = field(default=0.0, init=False)
    _flusher: asyncio.Task[None] | None = field(default=None, init=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    _before: dict[str, tuple[Bookkeeping, list[Any]]] = field(default_factory=dict, init=False)

    @staticmethod
    def commits_for(consumer: Any) -> bool:
        """Whether `consumer`'s offsets are committed here: a group's aiokafka consumer (not a stand-in, not one outside any group)."""
        return isinstance(consumer, AIOKafkaConsumer) and consumer._group_id is not None

    def before_commit(self, key: str, action: Bookkeeping, items: Sequence[Any]) -> None:
        """Run `action` once with every item given under `key` since the last commit, right before the next one."""
        self._before.setdefault(key, (action, []))[1].extend(items)

    async def handled(self, consumer: Any, records: Sequence[KafkaRecord]) -> None:
        """Every record of a polled batch is handled: commit now if the last commit is `interval_s` old, else soon."""
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
        await self.reached(consumer, offsets)

    async def reached(self, consumer: Any, offsets: dict[TopicPartition, int]) -> None:
        """Every record of each partition before its offset in `offsets` is handled: commit now if the interval has passed, else soon."""
        if not self.commits_for(consumer):
            return
        self._consumer = consumer
        for tp, offset in offsets.items():
            self._pending[tp] = max(self._pending.get(tp, 0), offset)
        loop = asyncio.get_running_loop()
        if loop.time() - self._last >= self.interval_s:
            await self.flush()
        if self._pending and (self._flusher is None or self._flusher.done()):  # not yet due, or the commit failed
            self._flusher = loop.create_task(self._flush_later(), name=f"commits:{self.name}")

    async def _flush_later(self) -> None:
        """Commit what the last batches handled once the interval has passed (nothing else may come to do it)."""
        while self._pending:
            await asyncio.sleep(max(_RETRY_S, self._last + self.interval_s - asyncio.get_running_loop().time()))
            await self.flush()

    async def flush(self) -> None:
        """Commit every handled offset not committed yet; never raises for Kafka (what could not be committed is tried again)."""
        async with self._lock:
            consumer, offsets = self._consumer, self._pending
            if consumer is None or not offsets:
                return
            self._last = asyncio.get_running_loop().time()
            if not await self._bookkeeping():
                return  # the offsets wait with it: the flusher tries both again after the interval
            self._pending = {}
            assigned = consumer.assignment()
            # A partition already given away keeps its last commit: its new owner reads the rest again.
            offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
            if not offsets:
                return
            try:
                await consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:  # the group rebalanced meanwhile: as above
                log.info("%s: offsets not committed, the group rebalanced (%s); they are read again", self.name, exc)
            except KafkaError as exc:  # the coordinator moved, a request timed out: the next flush tries again
                log.warning("%s: committing offsets failed (%s); retrying", self.name, exc)
                for tp, offset in offsets.items():
                    self._pending[tp] = max(self._pending.get(tp, 0), offset)
            except Exception:  # the consumer is closed: what it handled since its last commit is read again
                log.exception("%s: offsets not committed; they are read again", self.name)

    async def _bookkeeping(self) -> bool:
        """Do what must precede the commit (`before_commit`); False if some of it failed (kept for the next flush)."""
        while self._before:
            key = next(iter(self._before))
            action, items = self._before.pop(key)  # what later batches give meanwhile gathers afresh
            try:
                await action(items)
            except Exception:
                log.exception("%s: %s not done; the offsets are not committed until it is", self.name, key)
                self._before.setdefault(key, (action, []))[1][:0] = items
                return False
        return True

    async def closing(self) -> None:
        """The consumer is stopping: commit what is handled, and from now on every batch as it ends."""
        self.interval_s = 0.0
        await self.flush()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher


class Unfinished:
    """A consumer's records polled and not yet handled, per partition: how far each partition's handled prefix reaches.

    Records handled out of order (in lanes, `servicekit._bus_lanes`) may be committed only up to the first of their
    partition not yet handled: the committed offset is that record's, so a crash reads it and everything after it again.
    Records are known by identity: one polled again after a rebalance (`forget`) is another, and the first one's end moves nothing.
    """

    def __init__(self) -> None:
        # Per partition, its unfinished records by offset in the order polled (offsets only grow): the first is the lowest.
        self._open: dict[TopicPartition, dict[int, KafkaRecord]] = {}
        self._next: dict[TopicPartition, int] = {}  # the offset after the last record polled of each partition
        self.count = 0

    def polled(self, records: Sequence[KafkaRecord]) -> None:
        """`records` were polled: unfinished until `done`."""
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            self._open.setdefault(tp, {})[record.offset] = record
            self._next[tp] = record.offset + 1
        self.count += len(records)

    def holds(self, record: KafkaRecord) -> bool:
        """Whether `record` is unfinished here (not yet `done`, its partition not forgotten since it was polled)."""
        return self._open.get(TopicPartition(record.topic, record.partition), {}).get(record.offset) is record

    def done(self, record: KafkaRecord) -> tuple[TopicPartition, int] | None:
        """`record` is handled: its partition and the offset its handled prefix now reaches, if that moved (else None)."""
        tp, offset = TopicPartition(record.topic, record.partition), record.offset
        open_ = self._open.get(tp)
        if open_ is None or open_.get(offset) is not record:
            return None  # its partition was forgotten (a rebalance took it): its end moves nothing
        first = next(iter(open_))
        del open_[offset]
        self.count -= 1
        if offset != first:
            return None  # a record before it is still unfinished
        return tp, next(iter(open_), self._next[tp])

    def forget(self) -> None:
        """A rebalance takes every partition: nothing unfinished counts any more (the partitions' next owner reads it again)."""
        self._open.clear()
        self._next.clear()
        self.count = 0
