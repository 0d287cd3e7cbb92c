"""The kit's Kafka consumer: librdkafka (confluent-kafka) behind the part of aiokafka's consumer API that FastStream and the kit use.

Why not aiokafka's consumer: it builds and parses every fetch request in Python. A consumer at a
low, steady rate polls about once per record, and one bare aiokafka hop spent ~1.3–1.6 ms of CPU a
message that way against ~0.45–0.6 ms for the same hop on librdkafka, whose fetcher, group
membership and commits run in C threads (`bench.bare_hop` and `bench.bare_hop --client librdkafka`,
docs/benchmarks.md). A governed action is about a dozen consumer deliveries, so this is most of what
the services spent per action at a steady rate.

What stays the same, by construction: FastStream's subscriber still owns the consume loop and
builds the consumer through `make_broker`'s builder; each poll still returns aiokafka
`ConsumerRecord`s (what the kit's parser, decoders and handlers read); nothing is committed by the
client itself (`enable.auto.commit` off: `servicekit.commits` commits what is handled); a batch that
failed is rewound by `seek`. FastStream's in-memory test broker replaces the builder with its own
fake, so unit tests are unaffected.

Threads: every call that can wait (poll, commit, position, close) runs in a thread of this
consumer's own, so the event loop never blocks. Polls run in one thread (librdkafka's rebalance
callbacks run inside them), commits in another: a commit sent by the flusher while a poll is
waiting does not wait for that poll. librdkafka's handle is thread-safe.

Nothing silent: an error the client reports (a broker away, a topic it may not read) is logged
with librdkafka's own text; a fatal one stops the consumer's polls with `KafkaError`, which
FastStream's loop logs and the service's liveness check turns into a restart once records wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import confluent_kafka
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, ConsumerStoppedError, KafkaError

__all__ = ["RdConsumer", "librdkafka_options"]

log = logging.getLogger(__name__)

_SLICE_S = 0.2  # a poll waits in slices this long, so that a stop is seen within it
# aiokafka options librdkafka has under another name
_RENAMED = {
    "client_id": "client.id",
    "request_timeout_ms": "socket.timeout.ms",
    "retry_backoff_ms": "retry.backoff.ms",
    "metadata_max_age_ms": "metadata.max.age.ms",
    "connections_max_idle_ms": "connections.max.idle.ms",
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanisms",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "fetch_max_wait_ms": "fetch.wait.max.ms",
    "fetch_max_bytes": "fetch.max.bytes",
    "fetch_min_bytes": "fetch.min.bytes",
    "max_partition_fetch_bytes": "max.partition.fetch.bytes",
    "auto_offset_reset": "auto.offset.reset",
    "max_poll_interval_ms": "max.poll.interval.ms",
    "session_timeout_ms": "session.timeout.ms",
    "heartbeat_interval_ms": "heartbeat.interval.ms",
    "isolation_level": "isolation.level",
    "check_crcs": "check.crcs",
    "enable_auto_commit": "enable.auto.commit",
    "group_instance_id": "group.instance.id",
}
# aiokafka options with no librdkafka counterpart that the kit relies on (their values are aiokafka's own defaults,
# or only matter to aiokafka: deserializers, its event loop, its own poll and commit timers)
_IGNORED = {
    "loop",
    "key_deserializer",
    "value_deserializer",
    "auto_commit_interval_ms",
    "consumer_timeout_ms",
    "max_poll_records",
    "exclude_internal_topics",
    "rebalance_timeout_ms",
    "partition_assignment_strategy",
    "api_version",
    "ssl_context",
    "sasl_kerberos_service_name",
    "sasl_kerberos_domain_name",
    "sasl_oauth_token_provider",
    "client_rack",
}
# Membership errors: the group moved on, so the offsets were not committed (what aiokafka raises as CommitFailedError)
_REBALANCED = {
    confluent_kafka.KafkaError.REBALANCE_IN_PROGRESS,
    confluent_kafka.KafkaError.ILLEGAL_GENERATION,
    confluent_kafka.KafkaError.UNKNOWN_MEMBER_ID,
    confluent_kafka.KafkaError.FENCED_INSTANCE_ID,
    confluent_kafka.KafkaError._ASSIGNMENT_LOST,
    confluent_kafka.KafkaError._STATE,
}


def librdkafka_options(options: dict[str, Any]) -> dict[str, Any]:
    """The librdkafka configuration for aiokafka consumer keyword arguments; an option it cannot honour is an error, not dropped."""
    config: dict[str, Any] = {
        # One poll's wait for records is the kit's (`POLL_WAIT_MS`); records are handed over as soon as fetched.
        "socket.nagle.disable": True,
        # What the client fetches ahead of the handlers, per consumer: bounded (librdkafka's default, 64 MiB, would
        # let a backlog grow a service past its memory budget).
        "queued.max.messages.kbytes": 8192,
        "partition.assignment.strategy": "roundrobin",  # FastStream's aiokafka consumers' too: one group can hold both
        "logger": logging.getLogger("servicekit.rdkafka.librdkafka"),
    }
    for name, value in options.items():
        if name in _IGNORED or value is None:
            continue
        if name == "bootstrap_servers":
            config["bootstrap.servers"] = value if isinstance(value, str) else ",".join(value)
        elif name in _RENAMED:
            config[_RENAMED[name]] = value
        else:
            raise ValueError(f"the kit's Kafka consumer has no librdkafka option for {name}={value!r}")
    if config.get("enable.auto.commit"):
        raise ValueError("the kit commits offsets once records are handled; enable_auto_commit must be off")
    config["enable.auto.commit"] = False
    return config


def _record(message: confluent_kafka.Message) -> ConsumerRecord[Any, Any]:
    key, value = message.key(), message.value()
    kind, timestamp = message.timestamp()
    return ConsumerRecord(
        topic=message.topic(),
        partition=message.partition(),
        offset=message.offset(),
        timestamp=timestamp,
        timestamp_type=kind - 1,  # librdkafka: 1 create time, 2 log append time; aiokafka: 0, 1
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=-1 if key is None else len(key),
        serialized_value_size=-1 if value is None else len(value),
        headers=message.headers() or [],
    )


class RdConsumer:
    """A Kafka consumer on librdkafka with the methods of aiokafka's `AIOKafkaConsumer` that FastStream and the kit call."""

    def __init__(self, *, group_id: str | None = None, **options: Any) -> None:
        self._group_id = group_id
        self._config = librdkafka_options(options)
        self._config["error_cb"] = self._on_error
        self._from_latest = self._config.get("auto.offset.reset") == "latest"
        self._topics: list[str] = []
        self._pattern: str | None = None
        self._listener: Any = None
        self._partitions: list[TopicPartition] = []
        self._assigned: frozenset[TopicPartition] = frozenset()
        self._positions: dict[TopicPartition, int] = {}  # where a consumer outside a group starts each partition
        self._seeks: dict[TopicPartition, int] = {}  # rewinds, applied by the poll thread before it polls again
        self._seeks_lock = threading.Lock()
        self._fatal: str | None = None
        self._client: confluent_kafka.Consumer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._polls = ThreadPoolExecutor(1, thread_name_prefix="kafka-poll")
        self._commits = ThreadPoolExecutor(1, thread_name_prefix="kafka-commit")

    # What FastStream's subscriber calls before `start`
    def subscribe(self, topics: Iterable[str] = (), pattern: str | None = None, listener: Any = None) -> None:
        """Join the group for `topics` (or the topics `pattern` matches) at start; `listener` hears of rebalances."""
        self._topics, self._pattern, self._listener = list(topics), pattern, listener

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly these partitions (outside any group) from start."""
        self._partitions = list(partitions)

    async def start(self) -> None:
        """Connect; join the group (subscribed), or take every partition of the topics (a consumer outside any group)."""
        self._loop = asyncio.get_running_loop()
        await self._loop.run_in_executor(self._polls, self._start)

    def _start(self) -> None:
        config = dict(self._config)
        # librdkafka wants a group id even to assign partitions by hand; a consumer outside any group never joins or commits.
        config["group.id"] = self._group_id or f"{config.get('client.id', 'tidegate')}-alone-{uuid.uuid4().hex[:8]}"
        client = confluent_kafka.Consumer(config)
        self._client = client
        if self._group_id is not None and (self._topics or self._pattern):
            names = [f"^{self._pattern}"] if self._pattern else self._topics
            client.subscribe(names, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)
            return
        partitions = self._partitions or [TopicPartition(name, p) for name in self._topics for p in _partitions_of(client, name)]
        for tp in partitions:
            if self._from_latest:  # resolved now: a record that arrives after start must be read, not skipped
                _, high = client.get_watermark_offsets(confluent_kafka.TopicPartition(tp.topic, tp.partition), timeout=30)
                self._positions[tp] = high
            else:
                self._positions[tp] = confluent_kafka.OFFSET_BEGINNING
        client.assign([confluent_kafka.TopicPartition(tp.topic, tp.partition, offset) for tp, offset in self._positions.items()])
        self._assigned = frozenset(partitions)

    async def stop(self) -> None:
        """Stop polling and leave the group (what is not committed stays for the partition's next owner)."""
        self._stopping = True
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):  # a client that never connected has nothing to close
            await loop.run_in_executor(self._polls, self._close)
        self._polls.shutdown(wait=False)
        self._commits.shutdown(wait=False)

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()

    # Rebalances: librdkafka calls these inside a poll, in the poll thread
    def _on_assign(self, client: Any, partitions: list[confluent_kafka.TopicPartition]) -> None:
        added = {TopicPartition(p.topic, p.partition) for p in partitions}
        self._assigned = self._assigned | added
        self._tell_listener("on_partitions_assigned", added)

    def _on_revoke(self, client: Any, partitions: list[confluent_kafka.TopicPartition]) -> None:
        gone = {TopicPartition(p.topic, p.partition) for p in partitions}
        self._assigned = self._assigned - gone
        with self._seeks_lock:
            for tp in gone:
                self._seeks.pop(tp, None)
        self._tell_listener("on_partitions_revoked", gone)

    def _tell_listener(self, method: str, partitions: set[TopicPartition]) -> None:
        if self._listener is None or self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(getattr(self._listener, method)(partitions), self._loop)

    def _on_error(self, error: confluent_kafka.KafkaError) -> None:
        if error.fatal():
            self._fatal = error.str()
            log.error("kafka consumer: fatal error: %s", error.str())
        else:  # librdkafka retries these itself (a broker away, a connection refused)
            log.warning("kafka consumer: %s", error.str())

    # Reading
    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
        """The records fetched so far (up to `max_records`), waiting up to `timeout_ms` for the first one."""
        if self._stopping or self._client is None:
            raise ConsumerStoppedError()
        if self._fatal is not None:
            raise KafkaError(f"the consumer failed: {self._fatal}")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._polls, self._poll, timeout_ms / 1000, max_records or 500)

    def _poll(self, timeout_s: float, max_records: int) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
        client = self._client
        if client is None or self._stopping:
            return {}
        self._apply_seeks(client)
        deadline = time.monotonic() + timeout_s
        first = client.poll(min(_SLICE_S, timeout_s))
        while first is None and not self._stopping and (remaining := deadline - time.monotonic()) > 0:
            first = client.poll(min(_SLICE_S, remaining))
        if first is None:
            return {}
        messages = [first, *client.consume(max_records - 1, 0)] if max_records > 1 else [first]
        polled: dict[TopicPartition, list[ConsumerRecord[Any, Any]]] = {}
        for message in messages:
            error = message.error()
            if error is not None:  # an event, not a record: nothing to hand over, but said
                if error.code() != confluent_kafka.KafkaError._PARTITION_EOF:
                    log.warning("kafka consumer: %s (%s[%s])", error.str(), message.topic(), message.partition())
                continue
            record = _record(message)
            polled.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
        return polled

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Read `partition` from `offset` at the next poll (a rewind: the batch from there was not handled)."""
        with self._seeks_lock:
            self._seeks[partition] = offset

    def _apply_seeks(self, client: confluent_kafka.Consumer) -> None:
        with self._seeks_lock:
            seeks, self._seeks = self._seeks, {}
        for tp, offset in seeks.items():
            if tp in self._assigned:
                client.seek(confluent_kafka.TopicPartition(tp.topic, tp.partition, offset))

    def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer holds now."""
        return set(self._assigned)

    async def position(self, partition: TopicPartition) -> int:
        """The offset of the next record this consumer hands over from `partition`."""
        if partition in self._positions:  # a consumer outside any group: resolved at start
            return self._positions[partition]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._commits, self._position, partition)

    def _position(self, partition: TopicPartition) -> int:
        assert self._client is not None
        tp = confluent_kafka.TopicPartition(partition.topic, partition.partition)
        (at,) = self._client.position([tp])
        if at.offset >= 0:
            return int(at.offset)
        (committed,) = self._client.committed([tp], timeout=10)
        if committed.offset >= 0:
            return int(committed.offset)
        low, high = self._client.get_watermark_offsets(tp, timeout=10)
        return int(high if self._from_latest else low)

    async def waiting(self) -> int:
        """Records on the assigned partitions not yet handed over (what the liveness check calls lag)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._commits, self._waiting)

    def _waiting(self) -> int:
        if self._client is None or not self._assigned:
            return 0
        waiting = 0
        tps = [confluent_kafka.TopicPartition(tp.topic, tp.partition) for tp in self._assigned]
        for at in self._client.position(tps):
            if at.offset < 0:  # nothing handed over yet: unknown this time
                continue
            _, high = self._client.get_watermark_offsets(at, cached=True)  # as of the fetcher's last answer
            if high < 0:
                _, high = self._client.get_watermark_offsets(at, timeout=10)
            waiting += max(0, high - at.offset)
        return waiting

    # Committing
    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit these offsets (the next record to read, per partition) and wait for the group coordinator's answer."""
        if self._client is None:
            raise ConsumerStoppedError()
        if self._group_id is None:
            raise KafkaError("a consumer outside any group commits nothing")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._commits, self._commit, offsets)

    def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        assert self._client is not None
        wanted = [confluent_kafka.TopicPartition(tp.topic, tp.partition, offset) for tp, offset in offsets.items()]
        try:
            answered: Sequence[confluent_kafka.TopicPartition] = self._client.commit(offsets=wanted, asynchronous=False) or ()
        except confluent_kafka.KafkaException as exc:
            raise _commit_error(exc.args[0] if exc.args else None, str(exc)) from exc
        for tp in answered:
            if tp.error is not None:
                raise _commit_error(tp.error, f"{tp.topic}[{tp.partition}]: {tp.error.str()}")


def _partitions_of(client: confluent_kafka.Consumer, topic: str) -> list[int]:
    found = client.list_topics(topic, timeout=30).topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        why = found.error.str() if found is not None and found.error is not None else "it has no partitions"
        raise KafkaError(f"topic {topic} cannot be read: {why}")
    return sorted(found.partitions)


def _commit_error(error: Any, text: str) -> KafkaError:
    if isinstance(error, confluent_kafka.KafkaError) and error.code() in _REBALANCED:
        return CommitFailedError(text)
    return KafkaError(text)
