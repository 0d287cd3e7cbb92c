"""An aiokafka producer that connects nowhere and acknowledges only when the test says so, behind a `Bus`.

Shared by the unit tests of the publish path and of handlers that publish inside a polled batch.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka import AIOKafkaProducer

from servicekit import Bus

__all__ = ["FakeProducer", "make_bus"]


class FakeProducer(AIOKafkaProducer):
    """An aiokafka producer that records each send and acknowledges only when the test says so."""

    def __init__(self) -> None:  # no super().__init__: nothing connects
        self.sent: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]] = []
        self.deliveries: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, value: Any = None, key: Any = None, *args: Any, headers: Any = None, **kwargs: Any) -> Any:
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
    broker = SimpleNamespace(config=SimpleNamespace(producer=SimpleNamespace(_producer=SimpleNamespace(producer=producer))))
    return Bus(broker, "planner", "unused:1", "p."), producer  # type: ignore[arg-type]
