"""Fixtures of the planner's integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from bus_helpers import Collector, Producer

from servicekit import KitSettings


@pytest.fixture
async def producer(kit: KitSettings) -> AsyncIterator[Producer]:
    p = Producer(kit)
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def collector(kit: KitSettings) -> AsyncIterator[Collector]:
    c = Collector(kit, ["actions.proposed", "tasks.outcomes", "deadletter"])
    await c.start()
    yield c
    await c.stop()
