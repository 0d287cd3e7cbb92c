"""The sweep ends webhook secrets' overlaps without reading every endpoint at every round (leftovers22 #1).

The platform team runs the approval service with many tenants' endpoints. Its sweep runs every
`TIDEGATE_APPROVAL_SWEEP_INTERVAL_S` (2 s) and, to find the rotations whose overlap had ended, read every endpoint's row,
verified its signature and opened its sealed secret, at every round, with no overlap due: CPU and a statement's rows that
grew with the endpoints. Here, on the real database (a schema of the test's own), the rows the sweep reads are counted;
and the upgrade is played on a database that holds endpoints from before the column (migration 016).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from approval_harness import service_seals

from servicekit import REPO_ROOT, EventOutlet, KitSettings, SigningKey, create_pool
from servicekit.db import apply_migrations
from services.approval import webhooks
from services.approval._endpoint_rows import EndpointRows
from services.approval._undo_store import PgUndoResults
from services.approval.domain import GroupsConfig
from services.approval.repository import Endpoint, PgApprovalRepository
from services.approval.service import ApprovalService
from services.approval.settings import ApprovalSettings

MIGRATIONS = REPO_ROOT / "services" / "approval" / "migrations"
OVERLAP_ENDS = "016_endpoint_overlap_ends.sql"
NOW = datetime.now(UTC).replace(microsecond=0)
NOT_KNOWN = datetime.min  # '-infinity' as asyncpg reads it: what the migration marks a row written before it


class _Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def world(infra: Any, kit: KitSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dict[str, Any]]:
    """The approval service's use cases on a schema of the test's own; `read`: the endpoint ids whose rows were verified."""
    schema = f"approval_overlaps_{uuid.uuid4().hex[:8]}"
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations)
    pool = await create_pool(infra.database_url, max_size=2)
    await apply_migrations(pool, schema, migrations)
    read: list[str] = []
    verify = EndpointRows.read

    def counted(self: EndpointRows, endpoint: Endpoint, *args: Any, **kwargs: Any) -> Endpoint:
        read.append(endpoint.endpoint_id)
        return verify(self, endpoint, *args, **kwargs)

    monkeypatch.setattr(EndpointRows, "read", counted)

    class Published:
        async def publish(self, topic: str, event: Any) -> None:
            pass

    repo = PgApprovalRepository(pool, schema, seals=service_seals(kit))
    clock = _Clock()
    service = ApprovalService(
        repo=repo,
        publisher=EventOutlet(Published().publish),
        key=SigningKey.load_or_create(tmp_path, "approval"),
        groups=GroupsConfig(),
        settings=ApprovalSettings(),
        undo_results=PgUndoResults(pool, schema),
        clock=clock,
    )
    try:
        yield {"service": service, "repo": repo, "pool": pool, "schema": schema, "read": read, "clock": clock, "dir": migrations}
    finally:
        await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await pool.close()


def _endpoint(name: str, *, former_until: datetime | None = None) -> Endpoint:
    e = Endpoint(name, f"https://{name}.example/hook", webhooks.new_secret(), "acme", ("bob@acme.example",))
    if former_until is None:
        return e
    return Endpoint(
        e.endpoint_id, e.url, e.secret, e.tenant_id, e.approvers, former_secret=webhooks.new_secret(), former_until=former_until,
        former_approvers=e.approvers,
    )  # fmt: skip


async def test_a_sweep_with_no_overlap_due_reads_no_endpoint(world: dict[str, Any]) -> None:
    service, repo, read, clock = world["service"], world["repo"], world["read"], world["clock"]
    for n in range(40):
        await repo.upsert_endpoint(_endpoint(f"plain-{n}"))
    await repo.upsert_endpoint(_endpoint("rotated", former_until=NOW + timedelta(minutes=10)))
    read.clear()

    for _ in range(3):  # rounds while the overlap lasts: no row read, verified or opened
        assert (await service.sweep())["overlaps_ended"] == 0
    assert read == []

    clock.now = NOW + timedelta(minutes=10)  # the overlap ends: its row alone is read (found, then locked and rewritten)
    assert (await service.sweep())["overlaps_ended"] == 1
    assert set(read) == {"rotated"}
    after = await repo.endpoint("acme", "rotated")
    assert after is not None
    assert (after.former_secret, after.former_until) == (None, None)
    read.clear()
    assert (await service.sweep())["overlaps_ended"] == 0
    assert read == []


async def test_endpoints_from_before_the_upgrade_are_each_read_once_and_their_overlaps_end(world: dict[str, Any]) -> None:
    """Migration 016 on a database that holds endpoints (played back: the column dropped, the migration applied again)."""
    service, repo, read, pool, s = world["service"], world["repo"], world["read"], world["pool"], f'"{world["schema"]}"'
    await repo.upsert_endpoint(_endpoint("plain"))
    await repo.upsert_endpoint(_endpoint("passed", former_until=NOW - timedelta(seconds=1)))
    await repo.upsert_endpoint(_endpoint("lasting", former_until=NOW + timedelta(hours=1)))
    await pool.execute(f"ALTER TABLE {s}.webhook_endpoints DROP COLUMN overlap_ends_at")  # as a release before 22 left them
    await pool.execute(f"DELETE FROM {s}.schema_migrations WHERE name = $1", OVERLAP_ENDS)
    assert await apply_migrations(pool, world["schema"], world["dir"]) == [OVERLAP_ENDS]
    await pool.expire_connections()  # as the upgraded service starts: no statement prepared on the table as it was
    marked = await pool.fetch(f"SELECT endpoint_id, overlap_ends_at FROM {s}.webhook_endpoints ORDER BY endpoint_id")
    assert {r["endpoint_id"]: r["overlap_ends_at"] for r in marked} == dict.fromkeys(["lasting", "passed", "plain"], NOT_KNOWN)

    read.clear()
    assert (await service.sweep())["overlaps_ended"] == 1  # each read once: the passed overlap ends at the first round
    assert sorted(set(read)) == ["lasting", "passed", "plain"]
    ends = {r["endpoint_id"]: r["overlap_ends_at"] for r in await pool.fetch(f"SELECT * FROM {s}.webhook_endpoints")}
    assert ends == {"plain": None, "passed": None, "lasting": NOW + timedelta(hours=1)}
    passed = await repo.endpoint("acme", "passed")
    assert passed is not None
    assert passed.former_secret is None

    read.clear()
    assert (await service.sweep())["overlaps_ended"] == 0
    assert read == []  # from now on nothing is read until "lasting"'s overlap ends
