"""The database watch's own asks: never a false outage from a pool whose connections the handlers all hold."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from servicekit.db_outage import DatabaseWatch


class Pool:
    """A pool of 2 whose connections are all in use while `busy`; asking it waits, as asyncpg's acquire does."""

    def __init__(self) -> None:
        self.busy = True
        self.asked = 0

    def get_idle_size(self) -> int:
        return 0 if self.busy else 1

    def get_size(self) -> int:
        return 2

    def get_max_size(self) -> int:
        return 2

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        self.asked += 1
        if self.busy:
            await asyncio.Event().wait()

        class Connection:
            async def fetchval(self, query: str) -> int:
                return 1

        yield Connection()


def _retries() -> float:
    return REGISTRY.get_sample_value("tidegate_database_retries_total", {"service": "watched"}) or 0


async def test_a_busy_pool_is_not_taken_for_a_database_down_and_the_end_is_said_once_it_answers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    pool = Pool()
    watch = DatabaseWatch("watched", pool, "db:5432/tidegate", probe_interval_s=0.01, probe_timeout_s=0.05)  # type: ignore[arg-type]
    try:
        watch.failed(asyncpg.CannotConnectNowError("the database system is starting up"))
        before = _retries()
        await asyncio.sleep(0.2)
        assert pool.asked == 0  # the handlers hold every connection: waiting for one would time out, not a database down
        assert _retries() == before
        pool.busy = False
        for _ in range(100):
            if watch.down_since is None:
                break
            await asyncio.sleep(0.01)
        assert watch.down_since is None
        assert any("watched: its database at db:5432/tidegate answers again" in r.getMessage() for r in caplog.records)
    finally:
        await watch.close()
