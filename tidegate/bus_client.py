"""Publishing on catalog topics and watching them, as a client does: `submit`, `propose`, `undo` and the demo.

A client publishes signed events (as an outside agent, or as the operator for `control`) and learns what became of
them by reading the topics, keeping only what the deployment's keys verify.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas import Envelope, decode, encode, headers_for
from servicekit import AGENT, OPS, KitSettings, deployment_authority, kafka_options, sign_as_client, sign_as_operator
from servicekit.partitions import partitions_of

__all__ = ["Watcher", "publish_events"]


async def publish_events(kit: KitSettings, events: list[tuple[str, Envelope]]) -> None:
    """Publish events on catalog topics (keyed by task id, CloudEvents headers); unsigned ones are signed as the CLI would.

    Logged in as an outside agent (`agent`), or as the operator (`ops`) for `control` records.
    """
    principal = OPS if events and all(topic == "control" for topic, _ in events) else AGENT
    producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, acks="all", enable_idempotence=True, **kafka_options(kit, principal))
    try:
        await producer.start()  # in the try: one that cannot reach the broker is closed too, not reported by the GC after the error
        for topic, event in events:
            if event.signature is None:
                event = sign_as_operator(kit, event) if topic == "control" else sign_as_client(kit, event)
            headers = [(k, v.encode()) for k, v in headers_for(event).items()]
            await producer.send(kit.topic_prefix + topic, encode(event), key=event.key, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


class Watcher:
    """Reads catalog topics from their current end (what happens from now on), without a consumer group.

    Only events the deployment's keys verify are shown, as the services would accept them: an unsigned
    or forged event on a watched topic is never reported as something that happened.
    """

    def __init__(self, kit: KitSettings, names: list[str]) -> None:
        self.kit = kit
        self.names = names
        self.authority = deployment_authority(kit)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=kit.kafka_bootstrap, enable_auto_commit=False, **kafka_options(kit, OPS))

    async def start(self) -> None:
        """Assign every partition of the watched topics and position at their ends."""
        await self.consumer.start()
        tps = await partitions_of(self.consumer, [self.kit.topic_prefix + n for n in self.names])
        self.consumer.assign(tps)
        ends = await self.consumer.end_offsets(tps)
        for tp, end in ends.items():
            self.consumer.seek(tp, end)

    async def poll(self, timeout_s: float = 0.2) -> list[tuple[str, Any]]:
        """Events that arrived since the last poll, as (catalog topic, event)."""
        batches = await self.consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=2000)
        out = []
        for tp, records in batches.items():
            name = tp.topic.removeprefix(self.kit.topic_prefix)
            for record in records:
                with contextlib.suppress(ValueError):  # an invalid event is the dead-letter topic's business, not a client's
                    event = decode(name, record.value)
                    if self.authority.check(record.value, event) is None:
                        out.append((name, event))
        return out

    async def first(self, match: Callable[[str, Any], bool], timeout_s: float) -> Any:
        """The first event that matches, or None after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, event in await self.poll(min(0.5, max(0.05, deadline - time.monotonic()))):
                if match(name, event):
                    return event
        return None

    async def stop(self) -> None:
        """Disconnect."""
        await self.consumer.stop()
