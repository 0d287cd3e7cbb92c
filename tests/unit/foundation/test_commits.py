"""When a consumer's handled offsets are committed, and how a batch that raised is read again (`servicekit.commits`)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError

from servicekit.commits import Commits, rewind

A0, A1 = TopicPartition("p.tasks", 0), TopicPartition("p.tasks", 1)


class FakeConsumer(AIOKafkaConsumer):
    """An aiokafka consumer of group `g` that connects nowhere: it records commits and seeks."""

    def __init__(self, assigned: set[TopicPartition]) -> None:  # no super().__init__: nothing connects
        self._group_id = "g"
        self.assigned = assigned
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.failures: list[BaseException] = []

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    async def commit(self, offsets: Any = None) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.commits.append(dict(offsets))

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition, offset))


class Record:
    def __init__(self, tp: TopicPartition, offset: int) -> None:
        self.topic, self.partition, self.offset = tp.topic, tp.partition, offset


def batch(*records: tuple[TopicPartition, int]) -> list[Any]:
    return [Record(tp, offset) for tp, offset in records]


async def test_a_batch_that_raised_is_rewound_to_its_first_record_on_each_partition() -> None:
    consumer = FakeConsumer({A0, A1})
    rewind(consumer, batch((A0, 7), (A1, 3), (A0, 8), (A1, 2)))
    assert sorted(consumer.seeks) == [(A0, 7), (A1, 2)]


async def test_the_first_batch_is_committed_at_once_and_the_next_ones_together_after_the_interval() -> None:
    consumer, commits = FakeConsumer({A0, A1}), Commits(0.2)
    await commits.handled(consumer, batch((A0, 0)))
    assert consumer.commits == [{A0: 1}]
    await commits.handled(consumer, batch((A0, 1)))
    await commits.handled(consumer, batch((A1, 5), (A0, 2)))
    assert consumer.commits == [{A0: 1}]  # handled, not committed yet
    await asyncio.sleep(0.3)  # nothing else comes: the flusher commits them
    assert consumer.commits == [{A0: 1}, {A0: 3, A1: 6}]


async def test_a_failed_commit_is_tried_again_and_a_partition_given_away_is_left_to_its_new_owner() -> None:
    consumer, commits = FakeConsumer({A0, A1}), Commits(0.05)
    consumer.failures.append(KafkaConnectionError())
    await commits.handled(consumer, batch((A0, 4), (A1, 9)))
    assert consumer.commits == []  # the commit failed: kept for the next flush
    consumer.assigned = {A0}  # a rebalance took A1 away
    await asyncio.sleep(0.15)
    assert consumer.commits == [{A0: 5}]


async def test_closing_commits_what_is_handled_and_every_later_batch_as_it_ends() -> None:
    consumer, commits = FakeConsumer({A0}), Commits(60.0)
    await commits.handled(consumer, batch((A0, 0)))
    await commits.handled(consumer, batch((A0, 1)))
    await commits.closing()
    assert consumer.commits == [{A0: 1}, {A0: 2}]
    await commits.handled(consumer, batch((A0, 2)))  # a batch in flight when the stop began
    assert consumer.commits[-1] == {A0: 3}


async def test_a_consumer_outside_a_group_or_a_test_brokers_commits_nothing() -> None:
    commits = Commits(0.0)
    await commits.handled(None, batch((A0, 0)))
    outside = FakeConsumer({A0})
    outside._group_id = None
    await commits.handled(outside, batch((A0, 0)))
    assert outside.commits == []


class Deletes:
    """Bookkeeping a consumer's handlers leave for the commit (the planner's outbox delete), failing when told to."""

    def __init__(self, consumer: FakeConsumer) -> None:
        self.consumer, self.calls, self.failures = consumer, [], 0
        self.order: list[str] = []

    async def __call__(self, items: list[int]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the database went away")
        self.calls.append(list(items))
        self.order.append(f"deleted {items} with {len(self.consumer.commits)} commits made")


async def test_what_must_precede_a_commit_is_done_once_for_every_batch_since_the_last_right_before_it() -> None:
    """At a steady rate each batch holds one event: its delivered outbox entries cost a statement per commit, not per event."""
    consumer, commits = FakeConsumer({A0}), Commits(60.0)
    delete = Deletes(consumer)
    await commits.handled(consumer, batch((A0, 0)))  # the first batch is committed at once
    for offset, outbox_id in ((1, 11), (2, 12), (3, 13)):
        commits.before_commit("outbox", delete, [outbox_id])
        await commits.handled(consumer, batch((A0, offset)))
    assert delete.calls == []  # gathered, as the offsets are
    await commits.closing()
    assert delete.calls == [[11, 12, 13]]
    assert delete.order == ["deleted [11, 12, 13] with 1 commits made"]  # before the commit of the batches that gave them
    assert consumer.commits == [{A0: 1}, {A0: 4}]


async def test_failed_bookkeeping_holds_the_offsets_back_and_both_are_tried_again_with_what_came_meanwhile() -> None:
    consumer, commits = FakeConsumer({A0}), Commits(0.05)
    delete = Deletes(consumer)
    delete.failures = 1
    commits.before_commit("outbox", delete, [21])
    await commits.handled(consumer, batch((A0, 5)))
    assert (delete.calls, consumer.commits) == ([], [])  # not deleted, so not committed: a crash now redelivers offset 5
    commits.before_commit("outbox", delete, [22])
    await commits.handled(consumer, batch((A0, 6)))
    await asyncio.sleep(0.2)
    assert delete.calls == [[21, 22]]
    assert consumer.commits == [{A0: 7}]
