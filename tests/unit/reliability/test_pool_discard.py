"""On a database error the pool's connections are replaced; on any other transient error they are kept."""

from __future__ import annotations

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError

from servicekit.db import discard_broken_connections


class Pool:
    expired = 0

    async def expire_connections(self) -> None:
        self.expired += 1


@pytest.mark.parametrize(
    ("error", "expired"),
    [
        (asyncpg.InternalClientError("cannot switch to state 12; another operation is in progress"), 1),
        (asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"), 1),
        (asyncpg.AdminShutdownError("terminating connection due to administrator command"), 1),
        (asyncpg.InterfaceError("connection is closed"), 1),
        (KafkaConnectionError("broker down"), 0),
        (TimeoutError(), 0),
    ],
)
async def test_only_a_database_error_replaces_the_pools_connections(error: BaseException, expired: int) -> None:
    pool = Pool()
    await discard_broken_connections(pool)(error)  # type: ignore[arg-type]
    assert pool.expired == expired
