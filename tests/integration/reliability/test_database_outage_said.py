"""The on-call person reading an executor's log through a database outage: one line that says it, one that ends it.

SRE probe F5: with PostgreSQL stopped under `tidegate up`, the idle executor's log held only asyncpg's "Failed to restore
the pool connection floor; retrying", each with a 20-line traceback (516 lines in a minute), no line of its own, and its
`/health` said `retrying: null`: nothing told the operator that its database was unreachable, what it held, that it
would retry, or when it answered again. Acted on the real database: the executor's login refused (`CONNECTION LIMIT 0`)
and its connections dropped, as a restart does, so that its pool must log in again.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import pytest
from reliability_helpers import KILL_ROLE_CONNECTIONS

from servicekit import KitSettings
from servicekit.dbroles import service_role
from services.executor.app import build as build_executor


def _lines(caplog: pytest.LogCaptureFixture, level: int, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.name == name]


async def test_an_executor_whose_database_stops_answering_says_so_once_and_says_when_it_answers_again(
    kit: KitSettings, infra: Any, wait_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    role = service_role("executor", infra.role_prefix)
    service = build_executor(kit=kit)
    await service.start()
    admin = await asyncpg.connect(infra.admin_database_url)
    try:
        await admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT 0')
        assert await admin.fetchval(KILL_ROLE_CONNECTIONS, role) >= 1  # idle: only its pool notices, reconnecting

        await wait_for(lambda: _lines(caplog, logging.ERROR, "servicekit.db_outage"), timeout=30, what="the outage said")
        said = _lines(caplog, logging.ERROR, "servicekit.db_outage")
        assert len(said) == 1, said
        assert "executor: its database at" in said[0]
        assert "does not answer (TooManyConnectionsError" in said[0]
        assert "Holding 0 records in handling" in said[0]
        assert "retried until the database answers" in said[0]
        health = service.health()
        assert health["ok"] is True  # waiting, not dead
        assert "the database at" in (health["retrying"] or "")
        assert "has not answered for" in health["retrying"]

        await admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT -1')
        await wait_for(lambda: _lines(caplog, logging.WARNING, "servicekit.db_outage"), timeout=30, what="the recovery said")
        assert "executor: its database at" in _lines(caplog, logging.WARNING, "servicekit.db_outage")[0]
        assert "answers again after" in _lines(caplog, logging.WARNING, "servicekit.db_outage")[0]
        assert service.health()["retrying"] is None
        assert len(_lines(caplog, logging.ERROR, "servicekit.db_outage")) == 1  # once per outage, not a flood
        floors = [r for r in caplog.records if r.name == "asyncpg.pool" and "pool connection floor" in r.getMessage()]
        assert floors == []  # asyncpg's tracebacks are the outage line now
    finally:
        await admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT -1')
        await admin.close()
        await service.stop()
