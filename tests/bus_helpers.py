"""Test helpers for the real bus: a collector that reads topics from the beginning, and a producer.

Shared by the integration suites (pytest puts tests/ on the import path through its conftest).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from signers import signed

from schemas import ActionDecided, Envelope, decode, encode, headers_for
from servicekit import ADMIN, KitSettings, kafka_options

__all__ = ["Collector", "Producer", "every_record"]


class Collector:
    """Reads topics from the beginning in the background and keeps every decoded event, each record once.

    Assigned every partition of its topics, in no consumer group: a group's member that sends no heartbeat for a session
    (a test holding its event loop while `pg_restore` runs under load) is dropped, joins again with nothing committed and
    reads every record again (tests/integration/foundation/test_collector.py).
    """

    def __init__(self, kit: KitSettings, names: list[str]) -> None:
        self.kit = kit
        self.names = names
        self.events: dict[str, list[Any]] = {n: [] for n in names}
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kit.kafka_bootstrap,
            **kafka_options(self.kit, ADMIN),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await self._consumer.start()
        await self._consumer._client.force_metadata_update()  # no public metadata refresh in aiokafka
        tps: list[TopicPartition] = []
        for topic in (self.kit.topic_prefix + n for n in self.names):
            partitions = self._consumer.partitions_for_topic(topic)
            if not partitions:
                await self._consumer.stop()
                raise LookupError(f"{topic}: no such topic to collect")
            tps += [TopicPartition(topic, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        async for record in self._consumer:
            name = record.topic.removeprefix(self.kit.topic_prefix)
            self.events[name].append(decode(name, record.value))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    def proposals(self, task_id: str | None = None) -> list[Any]:
        return [e.data for e in self.events["actions.proposed"] if task_id is None or e.data.task_id == task_id]

    def outcome(self, task_id: str) -> Any:
        return next((e for e in self.events["tasks.outcomes"] if e.data.task_id == task_id), None)

    def decided(self, action_id: str, via: str = "policy") -> list[ActionDecided]:
        return [e for e in self.events["actions.decided"] if e.data.action_id == action_id and e.data.via == via]

    def authorized(self, action_id: str) -> list[Any]:
        return [e for e in self.events["actions.authorized"] if e.data.action_id == action_id]

    def result(self, action_id: str) -> Any:
        return next((e for e in self.events["actions.results"] if e.data.action_id == action_id), None)

    def rejected(self, needle: str) -> list[Any]:
        return [e for e in self.events["deadletter"] if needle in e.data.raw_value]


class Producer:
    """Publishes events (and raw bytes) on the test's topics, as an outside agent would."""

    def __init__(self, kit: KitSettings) -> None:
        self.kit = kit
        self._producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN), acks="all")

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(self, topic: str, event: Envelope) -> None:
        """Publish `event` signed by its rightful producer (unless already signed)."""
        event = signed(event, self.kit)
        headers = [(k, v.encode()) for k, v in headers_for(event).items()]
        await self._producer.send_and_wait(self.kit.topic_prefix + topic, encode(event), key=event.key, headers=headers)

    async def send_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        await self._producer.send_and_wait(self.kit.topic_prefix + topic, value, key=key)


async def every_record(bootstrap: str, prefix: str) -> list[bytes]:
    """Key, headers and value of every record of every topic of the run (control, dead letters and tool topics too)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **kafka_options(KitSettings(), ADMIN), enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # no public metadata refresh in aiokafka
        tps = [
            TopicPartition(t, p) for t in await consumer.topics() if t.startswith(prefix) for p in consumer.partitions_for_topic(t) or ()
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[bytes] = []
        while any([await consumer.position(tp) < end for tp, end in ends.items()]):
            for records in (await consumer.getmany(*tps, timeout_ms=1000)).values():
                out += [(r.key or b"") + b"".join(v for _, v in r.headers) + (r.value or b"") for r in records]
        return out
    finally:
        await consumer.stop()
