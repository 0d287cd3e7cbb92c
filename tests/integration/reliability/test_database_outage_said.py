"""The on-call person reading an executor's log through a database outage: one line that says it, one that ends it.

SRE probe F5: with PostgreSQL stopped under `tidegate up`, the idle executor's log held only asyncpg's "Failed to restore
the pool connection floor; retrying", each with a 20-line traceback (516 lines in a minute), no line of its own, and its
`/health` said `retrying: null`: nothing told the operator that its database was unreachable, what it held, that it
would retry, or when it answered again. Acted on the real database: the executor's login refused (`CONNECTION LIMIT 0`)
and its connections dropped, as a restart does, so that its pool must log in again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from bus_helpers import Collector, Producer
from prometheus_client import REGISTRY
from reliability_helpers import KILL_ROLE_CONNECTIONS, good_event

from servicekit import KitSettings
from servicekit.dbroles import service_role
from services.executor.app import build as build_executor
from services.policy.app import build as build_policy


@contextlib.asynccontextmanager
async def _login_refused(infra: Any, service: str) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """The service's login refused (`CONNECTION LIMIT 0`) and its connections dropped; yields what takes it back."""
    role = service_role(service, infra.role_prefix)
    admin = await asyncpg.connect(infra.admin_database_url)

    async def allow() -> None:
        await admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT -1')

    try:
        await admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT 0')
        assert await admin.fetchval(KILL_ROLE_CONNECTIONS, role) >= 1  # its pool must log in again
        yield allow
    finally:
        await allow()
        await admin.close()


def _lines(caplog: pytest.LogCaptureFixture, level: int, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.name == name]


async def test_an_executor_whose_database_stops_answering_says_so_once_and_says_when_it_answers_again(
    kit: KitSettings, infra: Any, wait_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    service = build_executor(kit=kit)
    await service.start()
    try:
        async with _login_refused(infra, "executor") as allow:  # idle: only its pool notices, reconnecting
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

            await allow()
            await wait_for(lambda: _lines(caplog, logging.WARNING, "servicekit.db_outage"), timeout=30, what="the recovery said")
            assert "executor: its database at" in _lines(caplog, logging.WARNING, "servicekit.db_outage")[0]
            assert "answers again after" in _lines(caplog, logging.WARNING, "servicekit.db_outage")[0]
            assert service.health()["retrying"] is None
            assert len(_lines(caplog, logging.ERROR, "servicekit.db_outage")) == 1  # once per outage, not a flood
            floors = [r for r in caplog.records if r.name == "asyncpg.pool" and "pool connection floor" in r.getMessage()]
            assert floors == []  # asyncpg's tracebacks are the outage line now
    finally:
        await service.stop()


async def test_a_policy_holding_proposals_through_an_outage_says_it_once_not_once_a_retry(
    kit: KitSettings, infra: Any, wait_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Proposals in hand while the policy's login is refused: one outage line, no retry line each 5 s, all decided after."""
    caplog.set_level(logging.INFO)
    service = build_policy(kit=kit)
    decided = Collector(kit, ["actions.decided"])
    producer = Producer(kit)
    await decided.start()
    await producer.start()
    await service.start()
    try:
        async with _login_refused(infra, "policy") as allow:
            events = [good_event("actions.proposed", f"t-{uuid.uuid4().hex[:8]}") for _ in range(3)]
            for event in events:
                await producer.send("actions.proposed", event)
            await wait_for(lambda: service.bus.liveness.in_flight, timeout=30, what="a proposal held")
            await asyncio.sleep(6)  # past the retries' 5 s cap: a line each retry came every 5 s before
            said = _lines(caplog, logging.ERROR, "servicekit.db_outage")
            assert len(said) == 1, said
            assert "policy: its database at" in said[0]
            retried = [m for m in _lines(caplog, logging.WARNING, "servicekit.bus") if "transient error" in m]
            assert retried == []  # the outage line stands for them

            await allow()
            ids = {e.data.action_id for e in events}
            await wait_for(
                lambda: ids <= {e.data.action_id for e in decided.events["actions.decided"]}, timeout=60, what="every proposal decided"
            )
            await wait_for(lambda: _lines(caplog, logging.WARNING, "servicekit.db_outage"), timeout=30, what="the recovery said")
            assert "handling resumes from what it held (at most 1 record" in _lines(caplog, logging.WARNING, "servicekit.db_outage")[0]
    finally:
        await service.stop()
        await producer.stop()
        await decided.stop()


async def test_an_idle_executor_counts_its_outage_for_the_page(kit: KitSettings, infra: Any, wait_for: Any) -> None:
    """`TidegateDatabaseRetrying` reads `tidegate_database_retries_total`: with no record in hand it stayed flat, so a
    night's outage with no traffic paged no one. The service's own asks of the database count now."""
    service = build_executor(kit=kit)
    await service.start()
    before = REGISTRY.get_sample_value("tidegate_database_retries_total", {"service": "executor"}) or 0
    try:
        async with _login_refused(infra, "executor"):
            await wait_for(
                lambda: (REGISTRY.get_sample_value("tidegate_database_retries_total", {"service": "executor"}) or 0) >= before + 2,
                timeout=30,
                what="the idle executor's outage counted",
            )
            assert service.bus.liveness.in_flight == 0  # no record: only its own asks counted
    finally:
        await service.stop()
