"""An in-process bus with the `Transport` interface: offline tests, examples, and adapters' scripted runs."""

from __future__ import annotations

import asyncio
import functools
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

from schemas import Envelope, decode, encode
from tidegate.client.transport import Delivery, Position
from tidegate.client.trust import Trust

__all__ = ["MemoryTransport"]


class MemoryTransport:
    """One partition per topic, kept in memory; events go through the wire encoding, so the contract is checked."""

    def __init__(self) -> None:
        self.trust: Trust | None = None  # the keys of the deployment on this bus (the scripted stand-in sets them)
        self.topics: dict[str, list[Any]] = defaultdict(list)
        self._committed: dict[tuple[str, str], int] = {}
        self._conditions: dict[asyncio.AbstractEventLoop, asyncio.Condition] = {}

    @property
    def _changed(self) -> asyncio.Condition:
        """The wake-up of the running loop (a restarted client may run on a new loop; one loop at a time)."""
        loop = asyncio.get_running_loop()
        if loop not in self._conditions:
            self._conditions = {loop: asyncio.Condition()}  # an earlier loop's waiters are gone with it
        return self._conditions[loop]

    async def start(self) -> None:
        """Nothing to connect."""

    async def stop(self) -> None:
        """Nothing to disconnect."""

    async def publish(self, topic: str, event: Envelope) -> None:
        """Append (encoded then decoded, as a real consumer would see it) and wake the readers."""
        async with self._changed:
            self.topics[topic].append(decode(topic, encode(event)))
            self._changed.notify_all()

    async def end(self, topics: tuple[str, ...]) -> Position:
        """Current length of each topic."""
        return Position({f"{t}:0": len(self.topics[t]) for t in topics})

    async def read(
        self, topics: tuple[str, ...], start: Position | None, *, caught_up: asyncio.Event | None = None
    ) -> AsyncIterator[tuple[str, Any]]:
        """Every event from `start`, then wait for more; `caught_up` is set once those there at the start were yielded."""
        next_index = {t: (start.offset(t, 0) if start else 0) for t in topics}
        history = [(t, e) for t in topics for e in self.topics[t][next_index[t] :]]
        for t in topics:
            next_index[t] = len(self.topics[t])
        for item in history:
            yield item
        if caught_up is not None:
            caught_up.set()
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: any(len(self.topics[t]) > next_index[t] for t in topics))
                fresh = [(t, e) for t in topics for e in self.topics[t][next_index[t] :]]
                for t in topics:
                    next_index[t] = len(self.topics[t])
            for item in fresh:
                yield item

    def _longer_than(self, topic: str, index: int) -> bool:
        return len(self.topics[topic]) > index

    async def serve(self, topic: str, group: str) -> AsyncIterator[Delivery]:
        """From the group's committed index; an unacked request is delivered again to the group's next reader."""
        index = self._committed.get((topic, group), 0)
        while True:
            async with self._changed:
                await self._changed.wait_for(functools.partial(self._longer_than, topic, index))
                event = self.topics[topic][index]

            async def ack(at: int = index) -> None:
                self._committed[(topic, group)] = max(self._committed.get((topic, group), 0), at + 1)

            index += 1
            yield Delivery(event, ack)
