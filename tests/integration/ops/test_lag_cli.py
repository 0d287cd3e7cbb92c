"""The on-call asks `tidegate lag` how far behind the executor is, on a real broker (oncall's finding 1).

`tidegate infra up` ships no `kafka-consumer-groups.sh`; the morning after an executor outage the on-call must still
see, per partition, what the executor's group committed, the end, the lag, how long the oldest unhandled authorization
has waited, and that no one reads it (exit 1); once a copy of the executor reads again, the lag is traffic (exit 0).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata
from aiokafka.structs import OffsetAndMetadata
from typer.testing import CliRunner

from servicekit import KitSettings, kafka_options
from servicekit.bus_rights import ADMIN
from tidegate.cli import app as cli


async def _lag(kit: KitSettings, *args: str) -> Any:
    env = {"TIDEGATE_TOPIC_PREFIX": kit.topic_prefix, "TIDEGATE_KAFKA_BOOTSTRAP": kit.kafka_bootstrap, "COLUMNS": "200"}
    return await asyncio.to_thread(CliRunner().invoke, cli, ["lag", "--service", "executor", *args], env=env)


async def _authorizations(kit: KitSettings, producer: AIOKafkaProducer, count: int) -> str:
    """`count` records on partition 0 of actions.authorized (the lag reads offsets and times, never a record's content)."""
    topic = kit.topic_prefix + "actions.authorized"
    for i in range(count):
        await producer.send_and_wait(topic, f"authorization {i}".encode(), key=b"task-1", partition=0)
    return topic


async def _commit(kit: KitSettings, topic: str, offset: int) -> None:
    """The executor's group commits `offset` on partition 0, as a stopped executor leaves it (no member stays)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kit.kafka_bootstrap, group_id=kit.topic_prefix + "executor", enable_auto_commit=False, **kafka_options(kit, ADMIN)
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.commit({tp: OffsetAndMetadata(offset, "")})
    finally:
        await consumer.stop()


async def test_the_on_call_sees_the_executors_backlog_who_reads_it_and_what_it_holds_up(
    kit: KitSettings, producer: AIOKafkaProducer, wait_for: Any
) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    topic = await _authorizations(kit, producer, 7)
    await _commit(kit, topic, 3)  # handled 0..2; then the executor stopped

    stopped = await _lag(kit, "--json")
    assert stopped.exit_code == 1, stopped.output  # behind, and no one reads it
    group = json.loads(stopped.stdout.splitlines()[0])
    assert (group["group"], group["service"], group["members"], group["lag"], group["stuck"]) == (
        kit.topic_prefix + "executor", "executor", 0, 4, True
    )  # fmt: skip
    first = next(p for p in group["partitions"] if p["partition"] == 0)
    assert (first["topic"], first["committed"], first["end"], first["lag"]) == ("actions.authorized", 3, 7, 4)
    assert before <= datetime.fromisoformat(first["oldest_at"]) <= datetime.now(UTC)  # the 4th record's broker time
    assert all(p["lag"] == 0 for p in group["partitions"] if p["partition"] != 0)

    said = await _lag(kit)
    assert said.exit_code == 1, said.output
    assert "actions.authorized[0]: committed 3, end 7, lag 4, oldest written" in said.stdout
    assert "authorization_expired" in said.stdout  # what an authorization that waits too long becomes
    assert "no one reads it: the executor is not running" in said.stdout

    # A copy of the executor is back: it joined the group and reads; the same lag is now traffic, not an incident.
    reader = AIOKafkaConsumer(
        topic, bootstrap_servers=kit.kafka_bootstrap, group_id=kit.topic_prefix + "executor", enable_auto_commit=False,
        **kafka_options(kit, ADMIN),
    )  # fmt: skip
    await reader.start()
    try:
        await wait_for(lambda: reader.assignment(), timeout=30, what="the reader to join the executor's group")
        back = await _lag(kit, "--json")
        assert back.exit_code == 0, back.output
        group = json.loads(back.stdout.splitlines()[0])
        assert (group["members"], group["state"], group["lag"], group["stuck"]) == (1, "Stable", 4, False)
    finally:
        await reader.stop()


async def test_a_group_that_never_committed_counts_every_record_the_topic_holds(kit: KitSettings, producer: AIOKafkaProducer) -> None:
    await _authorizations(kit, producer, 2)
    result = await _lag(kit, "--json")
    assert result.exit_code == 1, result.output
    group = json.loads(result.stdout.splitlines()[0])
    first = next(p for p in group["partitions"] if p["partition"] == 0)
    assert (first["committed"], first["lag"], group["state"]) == (None, 2, "Dead")


async def test_an_unknown_service_is_refused_with_the_names() -> None:
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["lag", "--service", "exector"])
    assert result.exit_code == 2
    assert "exector" in result.output
    assert "executor" in result.output


class AllButPartitionZero(AbstractPartitionAssignor):
    """Gives every member its topics' partitions, except partition 0: a member that lost part of its assignment."""

    name = "all-but-partition-zero"

    @classmethod
    def assign(
        cls, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        given = {}
        for member_id, metadata in members.items():
            topics = [(t, sorted(p for p in cluster.partitions_for_topic(t) or () if p != 0)) for t in metadata.subscription]
            given[member_id] = ConsumerProtocolMemberAssignment(0, topics, b"")
        return given

    @classmethod
    def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(0, list(topics), b"")

    @classmethod
    def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
        return None


async def test_the_on_call_sees_a_partition_that_no_member_of_a_live_group_holds(
    kit: KitSettings, producer: AIOKafkaProducer, wait_for: Any
) -> None:
    """`1 member (Stable)`, exit 0, while 4 authorizations waited on a partition no member held (reliability.md, "not detected")."""
    topic = await _authorizations(kit, producer, 7)
    await _commit(kit, topic, 3)
    reader = AIOKafkaConsumer(
        topic, bootstrap_servers=kit.kafka_bootstrap, group_id=kit.topic_prefix + "executor", enable_auto_commit=False,
        partition_assignment_strategy=(AllButPartitionZero,), **kafka_options(kit, ADMIN),
    )  # fmt: skip
    await reader.start()
    try:
        await wait_for(lambda: reader.assignment(), timeout=30, what="the reader to join the executor's group")
        result = await _lag(kit, "--json")
        assert result.exit_code == 1, result.output  # behind, and no one reads it, though the group has a member
        group = json.loads(result.stdout.splitlines()[0])
        assert (group["members"], group["state"], group["lag"], group["stuck"]) == (1, "Stable", 4, True)
        readers = {p["partition"]: p["reader"] for p in group["partitions"]}
        assert readers[0] is None
        assert all(reader and reader.endswith("@127.0.0.1") for partition, reader in readers.items() if partition != 0), readers

        said = await _lag(kit)
        assert said.exit_code == 1, said.output
        assert "1 member (Stable), 1 partition(s) held by none" in said.stdout
        assert "actions.authorized[0]: committed 3, end 7, lag 4" in said.stdout
        assert "held by no member" in said.stdout
        assert "1 partition(s) read by no one" in said.stdout
        assert "tidegate restart executor" in said.stdout
    finally:
        await reader.stop()
