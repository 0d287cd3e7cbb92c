"""A service's one Kafka producer: idempotent, acks=all, batched per partition, and known to be dead when it is.

The kit's own, as its consumers are (`servicekit.polling`): one aiokafka producer, nothing around it.
It was a FastStream broker's until 2026-12-02; the kit sent straight to the aiokafka producer inside
it anyway, found at a private path of FastStream's (as was the sender task it watches), and the broker
also opened an admin client no service used. Its logins are `kafka_options`'s (`servicekit.bus_auth`).

A record batch the broker refuses for good (`servicekit.refusals`: larger than the topic's `max.message.bytes`, a
record a compacted topic cannot take, a corrupt one, a policy's refusal) fails every record in it, and aiokafka's
idempotent producer keeps the sequence numbers it gave them: the broker, which stored nothing, then refuses every
later batch of that partition as out of sequence, which the kit must take for a dead producer. The producer here
gives those numbers back as the refusal is handled (`_SequenceKeeper`), so the partition takes the next batch, and
`send_alone` sends a refused record again in a batch of its own, to tell which of its batch-mates the broker refuses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from servicekit.bus_auth import LOGIN_KEYS
from servicekit.clock import BrokerClock
from servicekit.refusals import REFUSED_FOR_GOOD

__all__ = ["PRODUCER_BATCH_BYTES", "Producer", "servers"]

log = logging.getLogger(__name__)


# What the producer may buffer per partition before a send waits for the batch ahead to go (aiokafka's default is
# 16 KiB: a polled batch's ~1.5 KB signed events then went out ten to a request, each send waiting on the last).
# Below the broker's 1 MiB `message.max.bytes`.
PRODUCER_BATCH_BYTES = 512 * 1024

Headers = list[tuple[str, bytes | None]]  # a header may carry no value (Kafka allows it; a redrive sends one as it was)


def servers(bootstrap: str) -> list[str]:
    """A cluster's bootstrap list ("a:1, b:2") as the addresses its clients take, blanks and empty entries dropped."""
    return [server.strip() for server in bootstrap.split(",") if server.strip()]


class Producer:
    """The producer a `Bus` publishes through: `start` connects it (again is a no-op), `send` queues a record.

    `options` are `kafka_options(kit, principal)`: the producer logs in as that principal, and the
    bus's consumers take the same login (`login`). Tests stand in for it by overriding `send`
    (and `start`/`stop` when nothing may connect).
    """

    def __init__(self, bootstrap: str, service: str, **options: Any) -> None:
        self.bootstrap = bootstrap
        self.service = service
        self.options = options
        self.client: AIOKafkaProducer | None = None  # the aiokafka producer, while started
        self.clock = BrokerClock()  # this host's clock against the broker's, read off each acknowledgement

    @property
    def login(self) -> dict[str, Any]:
        """The login options of this producer's principal, for the other clients its bus opens (none without a login)."""
        return {k: v for k, v in self.options.items() if k in LOGIN_KEYS}

    async def start(self) -> None:
        """Connect (once: a started producer stays as it is)."""
        if self.client is not None:
            return
        client = AIOKafkaProducer(
            bootstrap_servers=servers(self.bootstrap),
            client_id=f"tidegate-{self.service}",
            acks="all",
            enable_idempotence=True,
            max_batch_size=PRODUCER_BATCH_BYTES,
            **self.options,
        )
        _give_back_refused_sequences(client)
        try:
            await client.start()
        except BaseException:
            await client.stop()  # a broker not reached: its half-open client is closed, not left for the garbage collector to report
            raise
        self.client = client

    async def stop(self) -> None:
        """Deliver what is queued, then disconnect."""
        client, self.client = self.client, None
        if client is not None:
            await client.stop()

    def dead(self) -> bool:
        """True when the producer's sender task has ended: a send would then wait forever (aio-libs/aiokafka#1017)."""
        task = getattr(getattr(self.client, "_sender", None), "sender_task", None)
        return task is not None and task.done()

    async def send(self, topic: str, value: bytes | None, *, key: bytes | None, headers: Headers) -> asyncio.Future[Any] | None:
        """Queue one record (value None: a tombstone): its delivery, which the broker acknowledges (None: a stand-in delivered it)."""
        sent = self.clock.sent()
        delivery: asyncio.Future[Any] = await self._started().send(topic, value, key=key, headers=headers)
        if sent is not None:
            delivery.add_done_callback(partial(self.clock.acknowledged, sent))
        return delivery

    async def send_alone(self, topic: str, value: bytes, *, key: bytes | None, headers: Headers) -> asyncio.Future[Any] | None:
        """Queue one record in a record batch of its own, on the partition `send` would choose: its delivery.

        The broker answers for a whole batch: a record sent alone is refused only for what it is itself.
        """
        client = self._started()
        partitions = sorted(await client.partitions_for(topic))
        batch = client.create_batch()
        batch.append(key=key, value=value, timestamp=None, headers=headers)  # the first record of a batch always fits
        batch.close()
        sent = self.clock.sent()
        delivery: asyncio.Future[Any] = await client.send_batch(batch, topic, partition=_PARTITIONER(key, partitions, partitions))
        if sent is not None:
            delivery.add_done_callback(partial(self.clock.acknowledged, sent))
        return delivery

    def _started(self) -> AIOKafkaProducer:
        if self.client is None:
            raise RuntimeError(f"{self.service}: the producer is not started")
        return self.client


_PARTITIONER = DefaultPartitioner()  # aiokafka's own, which `send` uses: a key's records go to one partition either way


def _give_back_refused_sequences(client: AIOKafkaProducer) -> None:
    """Have aiokafka's sender give back the sequence numbers of a batch the broker refused for good, as it handles the refusal.

    The broker stored nothing of that batch, so the partition's next batch must start at the batch's first number, or
    it is refused as out of sequence (`OutOfOrderSequenceNumber`, which the kit takes for a dead producer). aiokafka
    numbers a batch as it takes it to send, sends one request at a time to a broker and numbers no other batch before
    the answer is handled (`Sender._send_produce_req`, wrapped here): the numbers given back are exactly the refused
    batch's, and no batch holds later ones. aiokafka 0.14 pins these internals; a producer without them keeps
    aiokafka's behaviour, with one warning (tests/integration/reliability/test_refused_outputs.py fails if they move).
    """
    sender = getattr(client, "_sender", None)
    sequences: Any = getattr(client, "_txn_manager", None)
    send: Callable[[int, dict[Any, Any]], Awaitable[None]] | None = getattr(sender, "_send_produce_req", None)
    if send is None or not all(callable(getattr(sequences, name, None)) for name in ("sequence_number", "increment_sequence_number")):
        log.warning("this aiokafka's producer keeps the sequence numbers of a refused batch: its partition will refuse the next one")
        return

    async def send_produce_req(node_id: int, batches: dict[Any, Any]) -> None:
        drawn = {tp: sequences.sequence_number(tp) for tp in batches}
        await send(node_id, batches)
        for tp, batch in batches.items():  # no await since the answer was handled: no batch of these partitions was numbered since
            if _refused_for_good(batch) and sequences.sequence_number(tp) == drawn[tp]:
                sequences.increment_sequence_number(tp, -batch.record_count)

    sender._send_produce_req = send_produce_req  # type: ignore[union-attr]


def _refused_for_good(batch: Any) -> bool:
    future = batch.future
    return bool(future.done() and not future.cancelled() and isinstance(future.exception(), REFUSED_FOR_GOOD))
