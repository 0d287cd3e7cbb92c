"""One blocked record holds up neither the records polled after it nor other keys; its partition commits only up to it.

Against the real broker, a subscription with `concurrency` 4 (as the executor's): every record goes to partition 0, so the
blocked record sits between handled ones of the same partition. Before, the next batch was polled only once the whole batch
was handled (integrator5 finding 1: four quick reads of other tasks each waited 27.6 s behind one hung tool call).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from signers import AdminBus

import schemas as s
from servicekit import ADMIN, Bus, KitSettings, kafka_options


def task(task_id: str) -> s.TaskSubmitted:
    data = s.TaskSubmittedData(task_id=task_id, tenant_id="acme", workflow="support_triage", input={}, requested_by="a@acme.example")
    return s.TaskSubmitted.build(data, source="test")


class Blocking:
    """A handler whose records with a key ending `slow` wait for `release`; it notes what started and what ended, in order."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: list[str] = []
        self.ended: list[str] = []

    async def __call__(self, event: s.TaskSubmitted) -> None:
        self.started.append(event.data.task_id)
        if event.data.task_id.endswith("slow"):
            await self.release.wait()
        self.ended.append(event.data.task_id)


def lanes_bus(kit: KitSettings, handler: Blocking) -> Bus:
    bus = AdminBus(kit, "executor", commit_interval_s=0.0)  # every move of the handled prefix is committed at once
    bus.consume("tasks", handler, group_id=f"{kit.topic_prefix}lanes", concurrency=4, max_records=50)
    return bus


async def send(kit: KitSettings, *task_ids: str) -> None:
    """Publish tasks to partition 0 of `tasks`, keyed by the part of their id before the last `-` (their lane)."""
    producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN))
    await producer.start()
    try:
        for task_id in task_ids:
            key = task_id.rsplit("-", 1)[0].encode()
            await producer.send_and_wait(kit.topic_prefix + "tasks", s.encode(task(task_id)), key=key, partition=0)
    finally:
        await producer.stop()


async def committed(kit: KitSettings) -> int:
    """The lanes group's committed offset on partition 0 of `tasks` (-1: none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN))
    await admin.start()
    try:
        offsets: dict[TopicPartition, Any] = await admin.list_consumer_group_offsets(f"{kit.topic_prefix}lanes")
    finally:
        await admin.close()
    meta = offsets.get(TopicPartition(kit.topic_prefix + "tasks", 0))
    return -1 if meta is None else int(meta.offset)


async def committed_is(kit: KitSettings, offset: int) -> bool:
    return await committed(kit) == offset


def only_the_blocked_running(bus: Bus) -> bool:
    """Every record but the blocked one is done, its offset's commit included (a handler counts as running until then)."""
    lanes: Any = bus.pollers[0].window
    return lanes is not None and lanes.parking.running == 1


async def blocked_with_later_records_handled(kit: KitSettings, run: str, handler: Blocking, bus: Bus, wait_for: Any) -> None:
    """Offset 0 handled, 1 (`slow`) blocked; then, in later polls, quick records of other keys (2–5) and `slow`'s next (6)."""
    await send(kit, f"{run}-first")
    await wait_for(lambda: handler.ended == [f"{run}-first"], what="the first record")
    await wait_for(lambda: committed_is(kit, 1), what="the first record committed")
    await send(kit, f"{run}-slow")
    await wait_for(lambda: f"{run}-slow" in handler.started, what="the blocked record started")
    await send(kit, f"{run}-a-q1", f"{run}-b-q2", f"{run}-a-q3", f"{run}-c-q4", f"{run}-slow")  # `slow`'s next record too
    quick = [f"{run}-a-q1", f"{run}-b-q2", f"{run}-a-q3", f"{run}-c-q4"]
    await wait_for(lambda: all(q in handler.ended for q in quick), timeout=30, what="the later records of other keys, handled")
    await wait_for(lambda: only_the_blocked_running(bus), what="their handling and commits over")
    assert handler.ended.index(f"{run}-a-q1") < handler.ended.index(f"{run}-a-q3")  # one key's records in order
    assert handler.started.count(f"{run}-slow") == 1  # `slow`'s next record waits for the blocked one
    assert await committed(kit) == 1  # not past the blocked record, though everything after it is handled


async def test_records_polled_after_a_blocked_one_are_handled_first_and_the_commit_waits_for_it(kit: KitSettings, wait_for: Any) -> None:
    run, handler = uuid.uuid4().hex[:8], Blocking()
    bus = lanes_bus(kit, handler)
    await bus.start()
    try:
        await blocked_with_later_records_handled(kit, run, handler, bus, wait_for)
        handler.release.set()
        await wait_for(lambda: committed_is(kit, 7), what="everything committed once the blocked one is done")
        assert handler.ended[-2:] == [f"{run}-slow", f"{run}-slow"]  # the key's next record only after it
    finally:
        await bus.stop()


async def test_a_crash_with_a_record_blocked_redelivers_it_and_everything_after_it(kit: KitSettings, wait_for: Any) -> None:
    run, handler, again = uuid.uuid4().hex[:8], Blocking(), Blocking()
    bus = lanes_bus(kit, handler)
    await bus.start()
    await blocked_with_later_records_handled(kit, run, handler, bus, wait_for)
    for poller in bus.pollers:  # a crash as far as offsets go: no grace, no last commit, the blocked handler cut off
        await poller.stop(graceful_timeout_s=0)
    await bus.producer.stop()
    assert await committed(kit) == 1

    again.release.set()
    restarted = lanes_bus(kit, again)
    await restarted.start()
    try:
        expected = [f"{run}-slow", f"{run}-a-q1", f"{run}-b-q2", f"{run}-a-q3", f"{run}-c-q4", f"{run}-slow"]
        await wait_for(lambda: sorted(again.ended) == sorted(expected), timeout=30, what="the blocked record and all after it, read again")
        assert again.ended.index(f"{run}-a-q1") < again.ended.index(f"{run}-a-q3")
        await wait_for(lambda: committed_is(kit, 7), what="all committed by the new consumer")
    finally:
        await restarted.stop()
