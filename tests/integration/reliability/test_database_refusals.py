"""The database refusing a service (a password rotated before the restart, `too many connections`): retried, shown, nothing lost.

Acted on the real database as its operator would: the policy service's role is changed under the running service
and its connections dropped (as a restart, a failover or asyncpg's idle timeout does), so that its pool must log in
again. Before, the refusal was taken for the record's fault: each proposal was dead-lettered `handler_error` and lost.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from bus_helpers import Collector, Producer
from reliability_helpers import KILL_ROLE_CONNECTIONS, good_event, watch_dead_letters

import schemas as s
from servicekit import KitSettings
from servicekit.dbroles import credentials_file, scram_verifier, service_role
from services.policy.app import build as build_policy


def _the_stored_password(infra: Any) -> str:
    """The policy's login as its file keeps it (what the role's password is back to)."""
    password = json.loads(credentials_file(infra.db_credentials_dir, "policy").read_text())["password"]
    return f"PASSWORD '{scram_verifier(password)}'"  # a verifier, as `db migrate` sends it: no password in pg_stat_statements


# (what the operator does to the role, what undoes it, the error the service then meets)
REFUSALS = {
    "too_many_connections": ("CONNECTION LIMIT 0", lambda infra: "CONNECTION LIMIT -1", "TooManyConnectionsError"),
    "password_rotated": (f"PASSWORD '{scram_verifier('rotated-before-the-restart')}'", _the_stored_password, "InvalidPasswordError"),
}


async def _refused_then_decided(
    kit: KitSettings,
    infra: Any,
    wait_for: Any,
    refuse: Callable[[asyncpg.Connection], Awaitable[None]],
    allow: Callable[[asyncpg.Connection], Awaitable[None]],
    error: str,
) -> None:
    """Proposals sent while the database refuses the policy (`refuse`, run as a superuser outside the policy's database):
    /health says it retries `error`, then once `allow` ran every proposal is decided and none was dead-lettered."""
    role = service_role("policy", infra.role_prefix)
    service = build_policy(kit=kit)
    rejected: list[s.EventRejected] = []
    watcher = await watch_dead_letters(kit, rejected)
    decided = Collector(kit, ["actions.decided"])
    producer = Producer(kit)
    await decided.start()
    await producer.start()
    await service.start()
    admin = await asyncpg.connect(infra.admin_database_url)
    outside = await asyncpg.connect(infra.admin_database_url, database="postgres")  # a database may not refuse its own session
    try:
        await refuse(outside)
        assert await admin.fetchval(KILL_ROLE_CONNECTIONS, role) >= 1  # its pool must log in again
        events = [good_event("actions.proposed", f"t-{uuid.uuid4().hex[:8]}") for _ in range(3)]
        for event in events:
            await producer.send("actions.proposed", event)
        retrying = await wait_for(
            lambda: (service.health()["retrying"] or "") if error in (service.health()["retrying"] or "") else None,
            timeout=30,
            what=f"/health retrying: {error}",
        )
        assert service.health()["ok"], retrying
        await allow(outside)
        ids = {e.data.action_id for e in events}
        await wait_for(
            lambda: ids <= {e.data.action_id for e in decided.events["actions.decided"]}, timeout=60, what="every proposal decided"
        )
        assert [r for r in rejected if r.data.service == "policy"] == []  # nothing dead-lettered: nothing lost
    finally:
        await allow(outside)
        await outside.close()
        await admin.close()
        await service.stop()
        await producer.stop()
        await decided.stop()
        await watcher.stop()


@pytest.mark.parametrize("refusal", sorted(REFUSALS))
async def test_proposals_met_by_a_refusing_database_are_retried_and_decided_once_it_takes_the_service_again(
    refusal: str, kit: KitSettings, infra: Any, wait_for: Any
) -> None:
    change, undo, error = REFUSALS[refusal]
    role = service_role("policy", infra.role_prefix)

    async def refuse(admin: asyncpg.Connection) -> None:
        await admin.execute(f'ALTER ROLE "{role}" {change}')

    async def allow(admin: asyncpg.Connection) -> None:
        await admin.execute(f'ALTER ROLE "{role}" {undo(infra)}')

    await _refused_then_decided(kit, infra, wait_for, refuse, allow, error)


async def test_proposals_met_by_a_database_not_accepting_connections_are_retried_not_dead_lettered(
    kit: KitSettings, infra: Any, wait_for: Any
) -> None:
    """`ALTER DATABASE … ALLOW_CONNECTIONS false` (a restore, maintenance): SQLSTATE 55000. Before, each proposal in flight was
    dead-lettered `handler_error` within a second and lost; `tidegate status` said healthy."""
    probe = await asyncpg.connect(infra.admin_database_url)
    database = await probe.fetchval("SELECT current_database()")
    await probe.close()

    async def refuse(outside: asyncpg.Connection) -> None:
        await outside.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')

    async def allow(outside: asyncpg.Connection) -> None:
        await outside.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')

    await _refused_then_decided(kit, infra, wait_for, refuse, allow, "not currently accepting connections")
