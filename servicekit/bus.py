"""The Kafka bus every service uses: publishing through its one producer, and consumers that never die nor skip.

A consumer here checks each record's bounds and validates it against the topic's contract; what it
cannot accept goes to `deadletter` ALONE, with the reason, its raw bytes (truncated), their size and
SHA-256, and consumption goes on with its neighbours. An offset is committed only after every record
before it is handled or dead-lettered: the batch handler returns only then (a dead letter that cannot
be written is retried, never skipped), and if it raises anyway the batch is rewound, not committed.
This bus is the one layer that retries a handler (`Bus.retrying`): transient infrastructure errors
(`servicekit.intake.classify`) are retried with capped backoff, forever, blocking the partition
rather than losing the event; a dead producer makes the process exit for its supervisor to restart.
An event a handler published that Kafka refuses for good (`servicekit.refusals`: too large for the
topic, invalid) is not retried either: the input whose handling published it is dead-lettered with
the broker's reason, and its batch-mates go on (`acknowledged_at_end`).

`Bus` is composed of one part a job, each a module of its own over a shared base (`_bus_base`: its
state, `retrying`, `producer_dead`): the publish path (`_bus_publish`), dead letters (`_bus_deadletter`),
the handling of one record (`_bus_handle`: decode, signature check, handler span), the end of a polled
batch (`_bus_acks`: acknowledgements, refused outputs), subscriptions and their consumers
(`_bus_subscribe`); what a batch has published is `servicekit.deliveries`'s. This module adds the lifecycle.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from servicekit._bus_base import Handler, log
from servicekit._bus_handle import Reject
from servicekit._bus_subscribe import Subscribing, Subscription
from servicekit.authority import Authority
from servicekit.bus_auth import kafka_options
from servicekit.deliveries import OutputRefused, once_delivered, once_delivered_together, publishing_for
from servicekit.intake import TRANSIENT_ERRORS
from servicekit.outlet import Recorded
from servicekit.partitions import partitions_of
from servicekit.producer import Producer
from servicekit.settings import KitSettings
from servicekit.signing import SigningKey
from servicekit.start_checkpoint import CHECKPOINTED, Checkpoint, Kept, digest, read_checkpoint, write_checkpoint

__all__ = [
    "TRANSIENT_ERRORS",
    "Bus",
    "Handler",
    "OutputRefused",
    "Producer",
    "Recorded",
    "Reject",
    "once_delivered",
    "once_delivered_together",
]

GRACEFUL_TIMEOUT_S = 10.0  # how long a stop waits for the batch in hand to finish


class Bus(Subscribing):
    """A service's view of the bus: its prefix, its name, its producer (`servicekit.producer`), its consumers.

    Its fields are `BusBase`'s; its parts publish, dead-letter, handle records, settle batches and subscribe.
    """

    async def start(self, *, timeout_s: float = 30.0) -> None:
        """Connect the producer, then start the consumers (subscribed before: `consume`, `servicekit.consume`).

        Returns once every `from_latest` consumer knows where "latest" is: Kafka resolves that lazily,
        and a record that arrived in between (a tool's reply to a call made right after start) would
        be skipped, not read.
        """
        if not self._started:
            self._routes = [self._keeping(route) for route in self._routes]
            self._register()
            self._started = True
        await self.producer.start()  # first: consumers' handlers publish from their first batch
        await self._resume_from_checkpoints()  # before the consumers: the kept records first, then the topic from there
        started = await asyncio.gather(*(poller.start() for poller in self.pollers), return_exceptions=True)
        refused = [outcome for outcome in started if isinstance(outcome, BaseException)]
        if refused:  # every start has ended, so `stop` stops each consumer that did start
            raise refused[0]
        deadline = asyncio.get_running_loop().time() + timeout_s
        for poller, topics in self._from_latest:
            consumer = poller.consumer
            if consumer is None:
                continue
            while not consumer.assignment():
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"{self.service}: no partitions assigned for {', '.join(topics)} after {timeout_s}s")
                await asyncio.sleep(0.02)
            for tp in consumer.assignment():
                remaining = max(0.1, deadline - asyncio.get_running_loop().time())
                await asyncio.wait_for(consumer.position(tp), remaining)

    async def stop(self) -> None:
        """Commit what is handled, finish in-flight batches (each committed as it ends), disconnect.

        The consumers stop together: a stop waits for the longest batch in hand (at most
        `GRACEFUL_TIMEOUT_S`), not for the sum of them.
        """
        self.stopping.set()
        for commits in self._commits:
            await commits.closing()
        await asyncio.gather(*(poller.stop(graceful_timeout_s=GRACEFUL_TIMEOUT_S) for poller in self.pollers))
        await self.producer.stop()
        if self._end_reader is not None:
            reader, self._end_reader = self._end_reader, None
            await reader.stop()

    async def wait_caught_up(self, topic: str, *, timeout_s: float = 30.0, while_progressing: bool = False) -> None:
        """Wait until this process has handled `topic` up to its end offsets as of now.

        The end offsets are read by one consumer of no group the bus keeps open once used (one request each time), so a
        handler may ask before each unit of work (the executor, before a call, that `control` holds no switch it has not read).
        Gives up after `timeout_s`; with `while_progressing` (a service's start), only after `timeout_s` in which it
        handled nothing: a start that reads a long `control` (junk a holder of `ops.properties` appended, which is kept
        forever) is slow, never cut off while it reads, since a start cut off would read it all again at its next try.
        Reading is counted record by record (`records_read`): a polled batch of junk whose dead letters each wait for the
        broker's ack can take longer than `timeout_s` under load, and `positions` move only when the batch is done.
        """
        reader = await self._ends_reader()
        full = self.topic(topic)
        tps = self._end_partitions.get(full) or await partitions_of(reader, [full])
        if tps:
            self._end_partitions[full] = tps
        ends = await reader.end_offsets(tps) if tps else {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        handled = self._handled_of(ends) + self.records_read.get(full, 0)
        while any(self.positions.get((tp.topic, tp.partition), 0) < end for tp, end in ends.items()):
            if while_progressing and (now_handled := self._handled_of(ends) + self.records_read.get(full, 0)) > handled:
                handled, deadline = now_handled, loop.time() + timeout_s
            if loop.time() > deadline:
                if while_progressing:
                    raise TimeoutError(f"{self.service}: {topic} not caught up: nothing of it handled for {timeout_s}s")
                raise TimeoutError(f"{self.service}: {topic} not caught up after {timeout_s}s")
            await asyncio.sleep(0.05)

    def _handled_of(self, ends: Mapping[TopicPartition, int]) -> int:
        """How far this process has handled the partitions of `ends`, all together (offsets summed)."""
        return sum(self.positions.get((tp.topic, tp.partition), 0) for tp in ends)

    def _keeping(self, route: Subscription) -> Subscription:
        """`route`, its handler noting each record it accepts when its topic's start resumes from a checkpoint."""
        if self.checkpoint_dir is None or self.signer is None or route.group_id is not None or route.from_latest:
            return route
        if route.topic not in CHECKPOINTED:
            return route
        handler = route.handler
        kept = self._kept.setdefault((self.topic(route.topic), 0), {})  # `control` and `directory` have one partition

        async def keeping(event: Any) -> None:
            await handler(event)  # a `Reject` (or any error) keeps nothing: the record is dead-lettered
            record = publishing_for.get()
            if record is not None:
                kept[record.offset] = Kept(record.offset, record.value or b"", record.key, record.timestamp, record.timestamp_type)

        return dataclasses.replace(route, handler=keeping)

    async def _resume_from_checkpoints(self) -> None:
        """For each checkpointed topic: the kept records handled again, and its consumer told to start where the checkpoint ends."""
        if self.checkpoint_dir is None or self.signer is None:
            return
        for (full, partition), kept in self._kept.items():
            checkpoint = read_checkpoint(self.checkpoint_dir, self.service, self.signer, full, partition)
            if checkpoint is None or not await self._continues(checkpoint):
                continue
            route = next(r for r in self._routes if self.topic(r.topic) == full and r.group_id is None)
            records = [
                ConsumerRecord(full, partition, k.offset, k.timestamp, k.timestamp_type, k.key, k.value, None, 0, len(k.value), ())
                for k in checkpoint.kept
            ]
            async with self.acknowledged_at_end():
                for record in records:
                    await self.handle_record(route.topic, record, route.handler)
            for record in records:
                self.mark_handled(record)
            tp = TopicPartition(full, partition)
            for poller in self.pollers:
                if full in poller.topics:
                    poller.start_at[tp] = checkpoint.next_offset
            self.positions[(full, partition)] = max(self.positions.get((full, partition), 0), checkpoint.next_offset)
            self._last_read[(full, partition)] = (checkpoint.next_offset - 1, checkpoint.last_sha256)
            log.info(
                "%s: %s resumed at offset %d from its checkpoint (%d records kept); what was refused before it is not read again",
                self.service, full, checkpoint.next_offset, len(kept),
            )  # fmt: skip

    async def _continues(self, checkpoint: Checkpoint) -> bool:
        """Whether the broker still holds what `checkpoint` read: its last record at its place, its kept ones not deleted."""
        tp = TopicPartition(checkpoint.topic, checkpoint.partition)
        reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, **self.client_options())
        await reader.start()
        try:
            reader.assign([tp])
            begin, end = (await reader.beginning_offsets([tp]))[tp], (await reader.end_offsets([tp]))[tp]
            first = min([k.offset for k in checkpoint.kept] + [checkpoint.next_offset - 1])
            if checkpoint.next_offset < 1 or checkpoint.next_offset > end or first < begin:
                log.warning(
                    "%s: %s holds offsets %d to %d, not every record its checkpoint read or kept (%d to %d): recreated, or its "
                    "records deleted? read whole",
                    self.service, checkpoint.topic, begin, end - 1, first, checkpoint.next_offset - 1,
                )  # fmt: skip
                return False
            reader.seek(tp, checkpoint.next_offset - 1)
            batch = await reader.getmany(tp, timeout_ms=10_000, max_records=1)
            last = next(iter(batch.get(tp, [])), None)
            same = last is not None and last.offset == checkpoint.next_offset - 1 and digest(last.value) == checkpoint.last_sha256
        finally:
            await reader.stop()
        if last is None:  # not an answer that it changed: a broker slow to answer, the record unreadable to this login
            log.warning(
                "%s: the broker did not return the record at %s@%d (the last its checkpoint read) within 10 s: read whole",
                self.service, checkpoint.topic, checkpoint.next_offset - 1,
            )  # fmt: skip
        elif not same:
            log.warning("%s: %s no longer holds what its checkpoint read (recreated?): read whole", self.service, checkpoint.topic)
        return same

    def save_checkpoints(self) -> None:
        """Write where each checkpointed topic is handled up to, with the records accepted below it (at the start's catch-up, at stop)."""
        if self.checkpoint_dir is None or self.signer is None:
            return
        for (full, partition), kept in self._kept.items():
            last = self._last_read.get((full, partition))
            handled = self.positions.get((full, partition), 0)
            if last is None or last[0] != handled - 1:
                continue  # nothing read yet, or not up to a record whose bytes are known
            below = [kept[offset] for offset in sorted(kept) if offset < handled]
            checkpoint = Checkpoint(full, partition, handled, last[1], below)
            try:
                write_checkpoint(self.checkpoint_dir, self.service, self.signer, checkpoint)
            except OSError as exc:
                log.warning("%s: could not write the checkpoint of %s (%r): the next start reads it whole", self.service, full, exc)

    async def _ends_reader(self) -> AIOKafkaConsumer:
        async with self._end_reader_opening:
            if self._end_reader is None:
                reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, **self.client_options())
                try:
                    await reader.start()
                except BaseException:
                    await reader.stop()
                    raise
                self._end_reader = reader
            return self._end_reader


def service_bus(kit: KitSettings, name: str, *, signer: SigningKey, authority: Authority | None = None) -> Bus:
    """Service `name`'s bus as the deployment's settings make it.

    Its producer logged in as the service; the prefix, bounds, commit interval and fetch wait of `kit`; every
    event it publishes signed by `signer`, every one it reads checked by `authority`, which judges a retired key's grace
    on a record that carries no append time (and on an approval link) at the later of this host's time and the broker's
    as the producer last read it (`servicekit.clock.BrokerClock.latest`): a host behind the broker's kept a retired key
    valid that much longer.
    """
    producer = Producer(kit.kafka_bootstrap, name, **kafka_options(kit, name))
    if authority is not None:
        authority.clock = producer.clock.latest
    return Bus(
        producer,
        name,
        kit.kafka_bootstrap,
        kit.topic_prefix,
        bounds=kit.bounds,
        signer=signer,
        authority=authority,
        commit_interval_s=kit.commit_interval_s,
        fetch_max_wait_ms=kit.fetch_max_wait_ms,
        busy_fetch_max_wait_ms=kit.busy_fetch_max_wait_ms,
        max_partition_fetch_bytes=kit.max_partition_fetch_bytes,
        checkpoint_dir=kit.run_dir / "checkpoints" if kit.start_checkpoints else None,
    )
