"""A service's one Kafka producer: idempotent, acks=all, batched per partition, and known to be dead when it is.

The kit's own, as its consumers are (`servicekit.polling`): one aiokafka producer, nothing around it.
It was a FastStream broker's until 2026-12-02; the kit sent straight to the aiokafka producer inside
it anyway, found at a private path of FastStream's (as was the sender task it watches), and the broker
also opened an admin client no service used. Its logins are `kafka_options`'s (`servicekit.bus_auth`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer

from servicekit.bus_auth import LOGIN_KEYS

__all__ = ["PRODUCER_BATCH_BYTES", "Producer", "servers"]

# What the producer may buffer per partition before a send waits for the batch ahead to go (aiokafka's default is
# 16 KiB: a polled batch's ~1.5 KB signed events then went out ten to a request, each send waiting on the last).
# Below the broker's 1 MiB `message.max.bytes`.
PRODUCER_BATCH_BYTES = 512 * 1024

Headers = list[tuple[str, bytes]]


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

    async def send(self, topic: str, value: bytes, *, key: bytes | None, headers: Headers) -> asyncio.Future[Any] | None:
        """Queue one record: its delivery, which the broker's acknowledgement completes (None: a stand-in that delivered it)."""
        if self.client is None:
            raise RuntimeError(f"{self.service}: the producer is not started")
        delivery: asyncio.Future[Any] = await self.client.send(topic, value, key=key, headers=headers)
        return delivery
