"""Counting the statements a service's code sends to PostgreSQL: each is a round trip (issue #12's cuts are held by them)."""

from __future__ import annotations

from typing import Any

import asyncpg

__all__ = ["Statements", "counting_pool"]


class Statements:
    """Every statement a pool's connections send (asyncpg's query logger), BEGIN and COMMIT included."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def __call__(self, record: Any) -> None:
        self.sent.append(record.query)

    def counted(self) -> int:
        """How many were sent since the last count."""
        n = len(self.sent)
        self.sent.clear()
        return n


async def _keep_session(_: asyncpg.Connection) -> None:
    """No reset query on release, as a service pool that leaves no session state (`servicekit.db.unopened_pool`)."""


async def counting_pool(dsn: str, statements: Statements, *, max_size: int = 1, reset_session: bool = True) -> asyncpg.Pool:
    """A connected pool whose every statement `statements` counts; resetting released connections as the service's pool does."""

    async def log(connection: asyncpg.Connection) -> None:
        connection.add_query_logger(statements)

    return await asyncpg.create_pool(dsn, min_size=1, max_size=max_size, init=log, reset=None if reset_session else _keep_session)
