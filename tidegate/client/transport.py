"""How the client reaches the bus: publish, read answer topics from a position, serve a tool's requests.

`Transport` is the seam; `KafkaTransport` is the real one (aiokafka, SASL from `ClientSettings`),
`MemoryTransport` (in `memory.py`) the in-process twin used by offline tests and examples.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from pydantic import ValidationError

from schemas import Envelope, decode, encode, headers_for
from tidegate.client.limits import Unsendable, too_large
from tidegate.client.settings import ClientSettings

__all__ = ["Delivery", "KafkaTransport", "Position", "TopicsMissing", "Transport"]

log = logging.getLogger(__name__)


class TopicsMissing(RuntimeError):
    """The broker has no topic of that name under the client's prefix: another deployment's prefix, or topics never created."""


@dataclass(frozen=True)
class Position:
    """Offsets of the answer topics (`topic:partition` → next offset): where to resume reading."""

    offsets: dict[str, int]

    def token(self) -> str:
        """A short string to keep beside an action id (a database column, a workflow's state, a model's context).

        Each topic and its offsets by partition, `actions.decided:12,40,0;approvals:3,,7` (an empty one is a partition
        the position does not name): plain text, nothing for JSON to escape.
        """
        topics: dict[str, dict[int, int]] = {}
        for key, offset in self.offsets.items():
            topic, _, partition = key.rpartition(":")
            topics.setdefault(topic, {})[int(partition)] = offset
        return ";".join(
            f"{topic}:{','.join(str(by[p]) if p in by else '' for p in range(max(by) + 1))}" for topic, by in sorted(topics.items())
        )

    @classmethod
    def parse(cls, token: str) -> Position:
        """The position a `token()` wrote (this form, or the JSON object earlier versions wrote)."""
        try:
            raw = json.loads(token) if token.startswith("{") else _offsets(token)
        except ValueError:
            raise ValueError("not a position token") from None
        if not isinstance(raw, dict) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in raw.values()):
            raise ValueError("not a position token")
        return cls({str(k): int(v) for k, v in raw.items()})

    def offset(self, topic: str, partition: int) -> int:
        """Where to start in one partition (0 when the position does not know it)."""
        return self.offsets.get(f"{topic}:{partition}", 0)


@dataclass(frozen=True)
class Delivery:
    """One request of a served tool topic; `ack()` after it is answered (at-least-once)."""

    event: Any
    ack: Callable[[], Awaitable[None]]


class Transport(Protocol):
    """Publishing and reading Tidegate topics (names without prefix)."""

    async def start(self) -> None:
        """Connect."""
        ...

    async def stop(self) -> None:
        """Disconnect."""
        ...

    async def publish(self, topic: str, event: Envelope) -> None:
        """Send one event and wait until the broker has it; `Unsendable` when it never takes one this large."""
        ...

    async def end(self, topics: tuple[str, ...]) -> Position:
        """Where the topics end now."""
        ...

    def read(
        self, topics: tuple[str, ...], start: Position | None, *, caught_up: asyncio.Event | None = None
    ) -> AsyncIterator[tuple[str, Any]]:
        """Every valid event of the topics from `start` (the beginning when None), then new ones as they come.

        `caught_up` is set once every event that was on the topics when the read began has been yielded
        (at once when there was none): what came after is live.
        """
        ...

    def serve(self, topic: str, group: str) -> AsyncIterator[Delivery]:
        """Requests of `topic` for a consumer group; each must be acked after it is answered."""
        ...


class KafkaTransport:
    """The real bus, through aiokafka, with the settings' connection and credentials."""

    def __init__(self, settings: ClientSettings) -> None:
        self._settings = settings
        self._prefix = settings.topic_prefix
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Start the producer (idempotent, acks=all); a broker not reached raises `ConnectionError` naming it and the login."""
        producer = AIOKafkaProducer(acks="all", enable_idempotence=True, **self._settings.kafka_options())
        try:
            await producer.start()
        except BaseException as exc:
            await producer.stop()  # nothing left open behind a failed start
            if isinstance(exc, KafkaError):
                raise ConnectionError(_unreachable(self._settings, exc)) from exc
            raise
        self._producer = producer

    async def stop(self) -> None:
        """Flush and stop the producer."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, topic: str, event: Envelope) -> None:
        """Send with the contract's key and headers; returns when the broker acknowledged it.

        Raises:
            Unsendable: The record is larger than the producer or the broker takes (never an outage: it is never taken).
        """
        if self._producer is None:
            raise RuntimeError("transport not started: call start() first")
        headers = [(k, v.encode()) for k, v in headers_for(event).items()]
        value = encode(event)
        try:
            await self._producer.send_and_wait(self._prefix + topic, value, key=event.key, headers=headers)
        except MessageSizeTooLargeError as exc:
            raise Unsendable(too_large(len(value), f"no more than the broker does ({exc})"), code="too_large") from exc

    def _consumer(self, **kwargs: Any) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(enable_auto_commit=False, fetch_max_wait_ms=50, **self._settings.kafka_options(), **kwargs)

    async def _partitions(self, consumer: AIOKafkaConsumer, topics: tuple[str, ...]) -> list[TopicPartition]:
        await consumer._client.force_metadata_update()  # a fresh consumer knows no topic until asked
        parts = [TopicPartition(self._prefix + t, p) for t in topics for p in sorted(consumer.partitions_for_topic(self._prefix + t) or ())]
        missing = [t for t in topics if not any(tp.topic == self._prefix + t for tp in parts)]
        if missing:
            raise TopicsMissing(
                f"topics missing on the broker: {', '.join(self._prefix + t for t in missing)} (is TIDEGATE_CLIENT_TOPIC_PREFIX the "
                "deployment's? `tidegate topics ensure` creates a deployment's topics)"
            )
        return parts

    async def end(self, topics: tuple[str, ...]) -> Position:
        """End offsets of every partition of the topics."""
        consumer = self._consumer()
        try:  # started inside: a start that fails or is cancelled still closes the consumer
            await consumer.start()
            parts = await self._partitions(consumer, topics)
            ends = await consumer.end_offsets(parts)
            return Position({f"{tp.topic.removeprefix(self._prefix)}:{tp.partition}": off for tp, off in ends.items()})
        except KafkaError as exc:
            raise ConnectionError(_unreachable(self._settings, exc)) from exc
        finally:
            await consumer.stop()

    async def read(
        self, topics: tuple[str, ...], start: Position | None, *, caught_up: asyncio.Event | None = None
    ) -> AsyncIterator[tuple[str, Any]]:
        """Assign every partition (no consumer group: reading commits nothing) and follow from `start`."""
        consumer = self._consumer()
        try:  # started inside: a client stopped while this reader starts still closes its consumer
            await consumer.start()
            parts = await self._partitions(consumer, topics)
            consumer.assign(parts)
            if start is None:
                await consumer.seek_to_beginning(*parts)
            else:
                for tp in parts:
                    consumer.seek(tp, start.offset(tp.topic.removeprefix(self._prefix), tp.partition))
            ends = await consumer.end_offsets(parts) if caught_up is not None else {}
            while True:
                if ends and await _reached(consumer, ends):
                    ends = {}
                if caught_up is not None and not ends:
                    caught_up.set()
                batch = await consumer.getmany(timeout_ms=500)
                for tp, records in batch.items():
                    name = tp.topic.removeprefix(self._prefix)
                    for record in records:
                        event = _decoded(name, record.value)
                        if event is not None:
                            yield name, event
        finally:
            await consumer.stop()

    async def serve(self, topic: str, group: str) -> AsyncIterator[Delivery]:
        """Consume with a group; the offset is committed by `ack()`, so an unanswered request is redelivered.

        A partition this process is to lose (another process serving the tool joined the group, or one left it) is let go
        only once every request of it handed out here is answered and acked: the member that gets it next starts after
        them. Let go at once, that member read them again from the last commit and ran them while they still ran here,
        which neither process's ledger could tell (a refund paid twice when a second agent process started). What of it
        was fetched and not handed out yet is left to that member.
        """
        consumer = self._consumer(group_id=self._prefix + group, auto_offset_reset="earliest")
        handed_out = _HandedOut()
        consumer.subscribe([self._prefix + topic], listener=handed_out)
        try:
            await consumer.start()
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for tp, records in batch.items():
                    for record in records:
                        if tp not in consumer.assignment():
                            break  # lost to another member while this batch was handed out: it reads them from the last commit

                        async def ack(tp: TopicPartition = tp, offset: int = record.offset) -> None:
                            try:
                                await consumer.commit({tp: offset + 1})
                            finally:
                                await handed_out.back(tp)

                        handed_out.out(tp)
                        event = _decoded(topic, record.value)
                        if event is None:
                            await ack()  # unreadable: logged by _decoded; nothing can answer it
                            continue
                        yield Delivery(event, ack)
        finally:
            await consumer.stop()


class _HandedOut(ConsumerRebalanceListener):  # type: ignore[misc]
    """The requests of each partition handed out and not acked yet; a partition is revoked once it has none."""

    def __init__(self) -> None:
        self._out: Counter[TopicPartition] = Counter()
        self._changed = asyncio.Condition()

    def out(self, tp: TopicPartition) -> None:
        self._out[tp] += 1

    async def back(self, tp: TopicPartition) -> None:
        async with self._changed:
            self._out[tp] -= 1
            self._changed.notify_all()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Wait until what was handed out of `revoked` is answered and acked (each call ends by its deadline at the latest)."""
        waiting = {tp: n for tp in revoked if (n := self._out[tp])}
        if waiting:
            log.info("waiting for %d call(s) in progress before letting %s go to another process", sum(waiting.values()), sorted(waiting))
        async with self._changed:
            await self._changed.wait_for(lambda: not any(self._out[tp] for tp in revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Nothing to do: reading starts at the group's last commit."""


async def _reached(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    """Whether the consumer's next offset of each partition is at or past where it ended (markers and deleted records skipped too)."""
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


def _offsets(token: str) -> dict[str, int]:
    """The offsets of a `Position.token()` (`topic:1,2;topic:3`); ValueError for anything else."""
    offsets: dict[str, int] = {}
    for part in token.split(";"):
        topic, colon, listed = part.partition(":")
        if not topic or not colon:
            raise ValueError(part)
        for partition, offset in enumerate(listed.split(",")):
            if offset:
                offsets[f"{topic}:{partition}"] = int(offset)
    return offsets


def _unreachable(settings: ClientSettings, exc: BaseException) -> str:
    """Why the bus was not reached, with what the client tried: the bootstrap and whether it logged in.

    aiokafka says "Unable to bootstrap" both for a broker that is down and for a login it refused, and a
    broker that requires SASL (`tidegate infra up`'s) refuses a client without one the same way.
    """
    options = settings.kafka_options()
    if settings.sasl_username:
        login = f"as SASL user {settings.sasl_username!r} ({options['security_protocol']}, {settings.sasl_mechanism})"
        from tidegate.client.governed import logins_dir  # here: governed imports this module

        login_file = logins_dir() / f"{settings.sasl_username}.properties"
        check = (
            "Is the broker up, TIDEGATE_CLIENT_SASL_PASSWORD that user's password, and TIDEGATE_CLIENT_SASL_MECHANISM its "
            f"mechanism ({settings.sasl_mechanism} was tried)? The login's file says both (its `sasl.mechanism`: a rotation, "
            "`tidegate infra rotate-login`, moves a login between SCRAM-SHA-512 and SCRAM-SHA-256): "
            f"{login_file} where `tidegate infra up` wrote it"
        )
    else:
        login = f"without a login ({options['security_protocol']}, TIDEGATE_CLIENT_SASL_USERNAME unset)"
        check = "Is the broker up? `tidegate infra up`'s requires a login: TIDEGATE_CLIENT_SASL_USERNAME=agent and its _SASL_PASSWORD."
    return f"Kafka at {settings.kafka_bootstrap} not reached {login}: {exc}. {check} (docs/integrations.md)"


def _decoded(topic: str, raw: bytes | None) -> Any:
    """The event, or None (logged) for a record that is not a valid event of the topic."""
    try:
        return decode(topic, raw or b"")
    except ValidationError as exc:
        log.warning("skipping an invalid event on %s: %s", topic, exc.errors()[:1])
        return None
