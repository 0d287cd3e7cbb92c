"""How far behind the bus each service's consumer groups are: per partition what the group committed, the end, the lag.

Read with aiokafka's admin client (committed offsets, members) and a consumer in no group (end offsets, and the record
at each committed offset: how long the oldest unhandled one has waited), without joining any group, so asking never
rebalances a service. `tidegate lag` prints it; `kafka-consumer-groups.sh`, which `tidegate infra up` does not ship,
is not needed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from servicekit import KitSettings, kafka_options
from servicekit.bus_rights import ADMIN
from servicekit.partitions import cluster_now

__all__ = ["GROUPS", "Group", "GroupLag", "PartitionLag", "read_lag"]


@dataclass(frozen=True)
class Group:
    """One consumer group of a service: the topics it reads (catalog names, `*` every topic) and what its lag holds up."""

    name: str  # the group's name without the deployment prefix
    service: str
    topics: tuple[str, ...]
    behind: str  # what an unhandled record of this group means, in the on-call's words


# The groups the services consume in (their `app.py`); `control` and `directory` are read in no group (from the start).
GROUPS: tuple[Group, ...] = (
    Group("planner", "planner", ("tasks", "actions.decided", "approvals", "actions.results"),
          "tasks not started and steps not moved on: the planner has not read these decisions and results yet"),
    Group("policy", "policy", ("actions.proposed", "approvals"),
          "proposals not decided and grants not decided again: nothing of them is authorized meanwhile"),
    Group("policy.results", "policy", ("actions.results",),
          "results whose budget reservation is not settled: a proposal that waits for its task's earlier read waits on them"),
    Group("policy.tasks", "policy", ("tasks",),
          "tasks whose untrusted input is not learned: the planner's proposals of them wait on it"),
    Group("approval", "approval", ("actions.decided", "actions.results"),
          "escalations not yet asked of a human (no ap- request yet) and unknown outcomes not yet followed up"),
    Group("executor", "executor", ("actions.authorized",),
          "authorized calls not made yet; one older than TIDEGATE_POLICY_AUTHORIZATION_TTL_S (300 s) when the executor reads it is "
          "refused authorization_expired, nothing runs, and the planner proposes it again"),
    Group("audit", "audit", ("*",),
          "events not yet in the audit log: `tidegate audit explain` and `tidegate tasks` do not show them yet; nothing is lost"),
)  # fmt: skip


@dataclass(frozen=True)
class PartitionLag:
    """One partition of a topic a group reads: what it committed (None: never), the end, and the oldest unhandled record."""

    topic: str  # catalog name
    partition: int
    committed: int | None
    start: int
    end: int
    oldest_at: datetime | None = None  # the broker's timestamp of the first unhandled record, when lag > 0 and it was read
    reader: str | None = None  # the member that holds it (`client_id@host`); None: no member holds it

    @property
    def lag(self) -> int:
        """Records not handled: from the commit (or, never committed, the first record the topic still holds) to the end."""
        return max(0, self.end - max(self.start, self.committed if self.committed is not None else self.start))


@dataclass
class GroupLag:
    """One group's lag over every partition it reads, who is reading, or why it could not be asked."""

    group: Group
    full_name: str
    state: str = ""  # the coordinator's: Stable, Empty (no member), Dead (no group), PreparingRebalance…
    members: int = 0
    partitions: list[PartitionLag] = field(default_factory=list)
    error: str = ""

    @property
    def unread(self) -> list[PartitionLag]:
        """Partitions no member holds while the group has members and is settled (`Stable`): nothing reads them.

        A rebalance under way holds none for a moment (any other state than `Stable`); a settled group with members
        should hold every partition of its topics. One it does not is read by no one, though the group looks alive
        (reliability.md: "a consumer that lost its assignment altogether").
        """
        if self.error or self.members == 0 or self.state != "Stable":
            return []
        return [p for p in self.partitions if p.reader is None]

    @property
    def lag(self) -> int:
        """Every partition's lag, summed."""
        return sum(p.lag for p in self.partitions)

    @property
    def oldest_at(self) -> datetime | None:
        """When the oldest unhandled record of the group was written (None: none behind, or not read)."""
        return min((p.oldest_at for p in self.partitions if p.oldest_at is not None), default=None)

    @property
    def stuck(self) -> bool:
        """Behind and read by no one, or a partition no member of a settled group holds: it will not catch up by itself."""
        return not self.error and ((self.lag > 0 and self.members == 0) or bool(self.unread))


def _login(kit: KitSettings, service: str) -> tuple[str, dict[str, Any]]:
    """The Kafka login that asks: `admin` when this machine holds it, else the group's own service's (it may describe its group)."""
    for principal in (ADMIN, service):
        if "sasl_plain_username" in (options := kafka_options(kit, principal)):
            return principal, options
    return ADMIN, kafka_options(kit, ADMIN)  # no login on file: a broker without authentication (one with it refuses: said)


def _topics(group: Group, seen: Iterable[str], prefix: str) -> list[str]:
    """The full names of the topics `group` reads that the broker has (a topic not made yet has nothing to lag)."""
    present = set(seen)
    if group.topics == ("*",):
        return sorted(t for t in present if t.startswith(prefix))
    return [prefix + t for t in group.topics if prefix + t in present]


async def _described(admin: AIOKafkaAdminClient, full_name: str) -> tuple[str, int, dict[tuple[str, int], str]]:
    """The group's state, its member count, and which member (`client_id@host`) holds each partition."""
    for response in await admin.describe_consumer_groups([full_name]):
        for _error, _name, state, _protocol_type, _protocol, members, *_ in response.groups:
            held: dict[tuple[str, int], str] = {}
            for _member_id, client_id, client_host, _metadata, assignment in members:
                if not assignment:  # a member that has not been given its assignment yet (a rebalance under way)
                    continue
                for tp in ConsumerProtocolMemberAssignment.decode(assignment).partitions():
                    held[(tp.topic, tp.partition)] = f"{client_id}@{str(client_host).lstrip('/')}"
            return str(state), len(members), held
    return "", 0, {}


async def _oldest(consumer: AIOKafkaConsumer, firsts: dict[TopicPartition, int], timeout_s: float) -> dict[TopicPartition, datetime]:
    """The broker's timestamp of the record at each offset of `firsts` (or the next one), read within `timeout_s`."""
    found: dict[TopicPartition, datetime] = {}
    if not firsts:
        return found
    consumer.assign(list(firsts))
    for tp, offset in firsts.items():
        consumer.seek(tp, offset)
    deadline = time.monotonic() + timeout_s
    while len(found) < len(firsts) and (left := deadline - time.monotonic()) > 0:
        batches = await consumer.getmany(timeout_ms=int(min(left, 1.0) * 1000), max_records=len(firsts) * 10)
        for tp, records in batches.items():
            if tp not in found and records:
                found[tp] = datetime.fromtimestamp(records[0].timestamp / 1000, UTC)
                consumer.pause(tp)
    return found


def _offset(committed: OffsetAndMetadata | None) -> int | None:
    return committed.offset if committed is not None and committed.offset >= 0 else None


async def _group_lag(kit: KitSettings, group: Group, timeout_s: float) -> GroupLag:
    prefix = kit.topic_prefix
    lag = GroupLag(group, prefix + group.name)
    principal, options = _login(kit, group.service)
    options = {"request_timeout_ms": int(timeout_s * 1000)} | options
    admin = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, **options)
    consumer = AIOKafkaConsumer(bootstrap_servers=kit.kafka_bootstrap, group_id=None, enable_auto_commit=False, **options)
    try:
        await asyncio.wait_for(asyncio.gather(admin.start(), consumer.start()), timeout_s)
        lag.state, lag.members, held = await _described(admin, lag.full_name)
        committed = await admin.list_consumer_group_offsets(lag.full_name)
        metadata = await cluster_now(consumer)
        tps = [
            TopicPartition(t, p) for t in _topics(group, metadata.topics(), prefix) for p in sorted(metadata.partitions_for_topic(t) or ())
        ]
        starts, ends = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        rows = [PartitionLag(tp.topic.removeprefix(prefix), tp.partition, _offset(committed.get(tp)), starts[tp], ends[tp]) for tp in tps]
        oldest = await _oldest(consumer, {TopicPartition(prefix + r.topic, r.partition): r.end - r.lag for r in rows if r.lag}, timeout_s)
        lag.partitions = [
            replace(
                r, oldest_at=oldest.get(TopicPartition(prefix + r.topic, r.partition)), reader=held.get((prefix + r.topic, r.partition))
            )
            for r in rows
        ]
    except (KafkaError, OSError, TimeoutError) as exc:
        text = str(exc) if str(exc).startswith(type(exc).__name__) else f"{type(exc).__name__}: {exc}"  # aiokafka's name themselves
        lag.error = f"not read as Kafka login {principal}: {text}".rstrip(": ")
    finally:
        await asyncio.gather(admin.close(), consumer.stop(), return_exceptions=True)
    return lag


async def read_lag(kit: KitSettings, services: Iterable[str] = (), *, timeout_s: float = 10.0) -> list[GroupLag]:
    """Each consumer group of `services` (every service when empty): its state, members and lag per partition."""
    wanted = set(services)
    groups = [g for g in GROUPS if not wanted or g.service in wanted]
    return list(await asyncio.gather(*(_group_lag(kit, g, timeout_s) for g in groups)))
