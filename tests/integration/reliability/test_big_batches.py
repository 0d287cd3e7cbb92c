"""A record batch larger than a consumer's share of a partition (`TIDEGATE_MAX_PARTITION_FETCH_BYTES`) costs a fetch, never a record.

Kafka (fetch v3+, KIP-74) sends nothing of a partition whose first batch does not fit its share unless the
partition comes first in the response; then it sends the batch whole. aiokafka 0.14, handed a cut batch,
would raise `RecordTooLargeError` and step past an offset. Anyone who may write a topic can make a batch
that size (the kit's own producer makes them up to 512 KiB in a burst), so every record of such batches,
on several partitions at once, must reach the handler.
"""

from __future__ import annotations

import uuid
from typing import Any

from reliability_helpers import BatchProducer, good_event, wire
from signers import AdminBus

from servicekit import KitSettings

SHARE = 16 * 1024  # the least the setting accepts


async def test_batches_larger_than_a_partitions_share_are_read_whole_on_every_partition(
    kit: KitSettings, batch_producer: BatchProducer, wait_for: Any
) -> None:
    sent: list[str] = []
    partitions: set[int] = set()
    for _ in range(8):  # written before the consumer starts: every fetch finds several partitions with a batch too large
        task = f"t-{uuid.uuid4().hex[:8]}"
        events = [good_event("tasks", task) for _ in range(60)]
        values = [wire(event, kit) for event in events]
        assert sum(map(len, values)) > 2 * SHARE
        partition, _ = await batch_producer.send_batch("tasks", task.encode(), values)
        partitions.add(partition)
        sent += [event.id for event in events]
    assert len(partitions) > 1

    bus = AdminBus(kit, "planner", max_partition_fetch_bytes=SHARE)
    handled: list[str] = []

    async def on_task(event: Any) -> None:
        handled.append(event.id)

    bus.consume("tasks", on_task, group_id=f"{kit.topic_prefix}planner")
    await bus.start()
    try:
        await wait_for(lambda: len(handled) >= len(sent), timeout=60, what="every record of the large batches")
        assert sorted(handled) == sorted(sent)  # each once, none skipped
        assert bus.rejected == 0
    finally:
        await bus.stop()
