"""Fixtures of the planner's integration tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from bus_helpers import Collector, Producer
from planner_restore_helpers import psql

from servicekit import KitSettings, create_pool
from servicekit.dbroles import with_database
from systems.seed import seed_demo
from tidegate.database import migrate


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


@pytest.fixture
async def own_database(infra: Any, kit: KitSettings) -> AsyncIterator[tuple[KitSettings, str]]:
    """A database of the test's own, migrated as `tidegate db migrate` does and seeded with the demo: restored whole, it
    touches no other test's rows. The kit on it, and its superuser URL (what `pg_dump` and `pg_restore` log in as)."""
    name = f"tidegate_h61_{uuid.uuid4().hex[:8]}"
    psql(infra.admin_database_url, f"CREATE DATABASE {name} OWNER tidegate")
    own = kit.model_copy(update={"database_url": with_database(infra.database_url, name)})
    try:
        await migrate(own, role_prefix=infra.role_prefix)
        pool = await create_pool(own.operator_database_url, max_size=1)
        try:
            await seed_demo(pool, ("acme",))
        finally:
            await pool.close()
        yield own, with_database(infra.admin_database_url, name)
    finally:
        psql(infra.admin_database_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
