"""Producers that connect nowhere, behind a `Bus`: one acknowledges only when the test says so, one at once.

Shared by the unit tests of the publish path and of handlers that publish inside a polled batch, with the consumer
record such a handler is given (`FakeRecord`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from servicekit import Bus, Producer

__all__ = ["FakeProducer", "FakeRecord", "KeepingProducer", "make_bus"]


@dataclass
class FakeRecord:
    """A consumer record as aiokafka hands it to a bus: what a batch of a topic is made of."""

    topic: str
    value: bytes
    offset: int
    partition: int = 0
    key: bytes | None = b"t-1"
    headers: tuple[tuple[str, bytes], ...] = ()


class KeepingProducer(Producer):
    """A producer that connects nowhere: every send is delivered at once, and kept (`published`, `keys`)."""

    def __init__(self, service: str = "test") -> None:
        super().__init__("unused:1", service)
        self.published: list[tuple[str, bytes]] = []
        self.keys: list[bytes | None] = []

    async def send(self, topic: str, value: bytes, *, key: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        self.published.append((topic, value))
        self.keys.append(key)


class FakeProducer(Producer):
    """A producer that records each send and acknowledges only when the test says so (nothing connects)."""

    def __init__(self) -> None:
        super().__init__("unused:1", "planner")
        self.sent: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]] = []
        self.deliveries: list[asyncio.Future[Any]] = []

    async def start(self) -> None:
        pass

    async def send(self, topic: str, value: bytes, *, key: bytes | None, headers: list[tuple[str, bytes]]) -> asyncio.Future[Any]:
        self.sent.append((topic, value, key, headers))
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.deliveries.append(delivery)
        return delivery

    def ack_all(self) -> None:
        for delivery in self.deliveries:
            if not delivery.done():
                delivery.set_result(None)


def make_bus() -> tuple[Bus, FakeProducer]:
    producer = FakeProducer()
    return Bus(producer, "planner", "unused:1", "p."), producer
