"""Offsets are committed only once handled, gathered over the commit interval; what is left uncommitted is read again.

Against the real broker: the group's committed offsets are read with the admin client, as `tidegate`'s lag checks do.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from signers import AdminBus

import schemas as s
from servicekit import ADMIN, Bus, KitSettings, kafka_options


def task(n: int, run: str) -> s.TaskSubmitted:
    data = s.TaskSubmittedData(task_id=f"{run}-{n}", tenant_id="acme", workflow="support_triage", input={}, requested_by="a@acme.example")
    return s.TaskSubmitted.build(data, source="test")


def consumer_bus(kit: KitSettings, interval_s: float, seen: list[str]) -> Bus:
    bus = AdminBus(kit, "planner", commit_interval_s=interval_s)

    async def on_task(event: s.TaskSubmitted) -> None:
        seen.append(event.data.task_id)

    bus.consume("tasks", on_task, group_id=f"{kit.topic_prefix}planner")
    return bus


async def committed(kit: KitSettings, expected: int | None = None) -> int | bool:
    """The group's committed offsets on `tasks`, summed over its partitions (or whether they sum to `expected`)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN))
    await admin.start()
    try:
        offsets: dict[TopicPartition, Any] = await admin.list_consumer_group_offsets(f"{kit.topic_prefix}planner")
    finally:
        await admin.close()
    total = sum(meta.offset for tp, meta in offsets.items() if tp.topic == kit.topic_prefix + "tasks" and meta.offset > 0)
    return total if expected is None else total == expected


async def test_handled_offsets_are_committed_together_once_the_interval_has_passed(kit: KitSettings, wait_for: Any) -> None:
    run, seen = uuid.uuid4().hex[:8], []
    bus = consumer_bus(kit, 4.0, seen)
    await bus.start()
    try:
        await bus.publish("tasks", task(0, run))
        await wait_for(lambda: seen == [f"{run}-0"], what="the first task")
        await wait_for(lambda: committed(kit, 1), what="the first batch committed at once")
        for n in range(1, 4):  # one poll each, inside the interval
            await bus.publish("tasks", task(n, run))
            await wait_for(lambda n=n: len(seen) == n + 1, what=f"task {n}")
        assert await committed(kit) == 1  # handled, not committed yet: no commit per poll
        await wait_for(lambda: committed(kit, 4), timeout=15, what="the interval's batches committed together")
    finally:
        await bus.stop()


async def test_what_a_crashed_consumer_had_not_committed_is_read_again_and_a_graceful_stop_commits_it(
    kit: KitSettings, wait_for: Any
) -> None:
    run, first, second, third = uuid.uuid4().hex[:8], [], [], []
    crashing = consumer_bus(kit, 60.0, first)
    await crashing.start()
    await crashing.publish("tasks", task(0, run))
    await wait_for(lambda: first == [f"{run}-0"], what="the first task")
    for n in (1, 2):
        await crashing.publish("tasks", task(n, run))
    await wait_for(lambda: len(first) == 3, what="three tasks handled")
    for poller in crashing.pollers:  # a crash as far as offsets go: the consumer leaves without the kit's last commit
        await poller.stop()
    await crashing.producer.stop()
    assert await committed(kit) == 1

    restarted = consumer_bus(kit, 60.0, second)
    await restarted.start()
    try:
        await wait_for(lambda: sorted(second) == [f"{run}-1", f"{run}-2"], what="the uncommitted tasks read again")
    finally:
        await restarted.stop()  # graceful: everything handled is committed
    assert await committed(kit) == 3

    after = consumer_bus(kit, 60.0, third)
    await after.start()
    try:
        await after.publish("tasks", task(3, run))
        await wait_for(lambda: third == [f"{run}-3"], what="only the new task")
    finally:
        await after.stop()


async def test_a_consumer_whose_partitions_a_rebalance_takes_commits_what_it_handled_first(kit: KitSettings, wait_for: Any) -> None:
    """A second copy joining the group (a scale-out, a rolling deploy) reads nothing the first had handled."""
    run, first, second = uuid.uuid4().hex[:8], [], []
    one = consumer_bus(kit, 60.0, first)  # an interval no test waits for: only the rebalance can commit
    await one.start()
    try:
        await one.publish("tasks", task(0, run))
        await wait_for(lambda: first == [f"{run}-0"], what="the first task")
        for n in (1, 2, 3):
            await one.publish("tasks", task(n, run))
        await wait_for(lambda: len(first) == 4, what="four tasks handled")
        assert await committed(kit) == 1  # handled, not committed yet

        two = consumer_bus(kit, 60.0, second)
        await two.start()
        try:
            await wait_for(lambda: committed(kit, 4), timeout=30, what="the first copy's commit as the group rebalanced")
            await wait_for(
                lambda: two.pollers[0].consumer and two.pollers[0].consumer.assignment(), timeout=30, what="partitions for the second copy"
            )
            await one.publish("tasks", task(4, run))
            await wait_for(lambda: f"{run}-4" in first + second, what="the task after the rebalance")
        finally:
            await two.stop()
    finally:
        await one.stop()
    assert sorted(first + second) == [f"{run}-{n}" for n in range(5)]  # nothing handled twice
