"""The approval API's undo on the real bus and database: an undo is known as one, by its id, and not undone (migrations 008, 009)."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from approval_harness import StartApproval

import schemas as s
from servicekit import REPO_ROOT, create_pool
from servicekit.db import apply_migrations
from servicekit.undo import undo_action_id
from services.approval._undo_store import KeptResult, PgUndoResults

MIGRATIONS = REPO_ROOT / "services" / "approval" / "migrations"
UNDO_IDS = "008_undo_ids.sql"
UNDO_IDS_APART = "009_undo_ids_apart.sql"
RESULT_EVENTS = "014_undo_result_events.sql"  # the column the service keeps each result's signed event in
UNTAG = s.UndoPlan(status="ready", tool="untag_ticket", args={"ticket_id": "T-1", "tags": ["refund"]})
RETAG = s.UndoPlan(status="ready", tool="tag_ticket", args={"ticket_id": "T-1", "tags": ["refund"]})


def _succeeded(action_id: str, tenant: str, tool: str, undo: s.UndoPlan) -> s.ActionResultData:
    return s.ActionResultData(
        action_id=action_id, task_id="t-1", tenant_id=tenant, tool=tool, status="succeeded", result={}, attempts=1, duration_ms=1, undo=undo
    )


@asynccontextmanager
async def _schema_before(infra: Any, folder: Path, migration: str, *also: str) -> AsyncIterator[tuple[asyncpg.Pool, str]]:
    """A schema of its own migrated up to `migration` (excluded), and `also`, from a copy of the migrations in `folder`; dropped after."""
    schema = f"approval_undo_ids_{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    for path in sorted(MIGRATIONS.glob("*.sql")):
        if path.name < migration or path.name in also:
            shutil.copy(path, folder / path.name)
    pool = await create_pool(infra.database_url, max_size=2)
    try:
        await apply_migrations(pool, schema, folder)
        yield pool, schema
    finally:
        await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await pool.close()


async def _kept_as_before(pool: asyncpg.Pool, schema: str, action_id: str, undo_id: str | None = None) -> None:
    """A row as an older copy of the service kept it: without an undo id (before 008), or with the one it computed then."""
    row = (action_id, "acme", "t-1", _succeeded(action_id, "acme", "tag_ticket", UNTAG).model_dump_json())
    into = f'INSERT INTO "{schema}".undo_results (action_id, tenant_id, task_id, result'
    if undo_id is None:
        await pool.execute(f"{into}) VALUES ($1, $2, $3, $4::jsonb)", *row)
    else:
        await pool.execute(f"{into}, undo_id) VALUES ($1, $2, $3, $4::jsonb, $5)", *row, undo_id)


async def _undo_ids(pool: asyncpg.Pool, schema: str) -> dict[str, str | None]:
    return {r["action_id"]: r["undo_id"] for r in await pool.fetch(f'SELECT action_id, undo_id FROM "{schema}".undo_results')}


async def test_results_kept_before_the_migrations_get_their_undo_id_as_servicekit_computes_it(infra: Any, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    async with _schema_before(infra, folder, UNDO_IDS) as (pool, schema):
        ids = ["a-1", "é" * 256, "x" * 251, "x" * 252]  # short, cut with a digest (of UTF-8 bytes), the last that fits, the first cut
        for action_id in ids:
            await _kept_as_before(pool, schema, action_id)
        for name in (UNDO_IDS, UNDO_IDS_APART):
            shutil.copy(MIGRATIONS / name, folder / name)
        assert await apply_migrations(pool, schema, folder) == [UNDO_IDS, UNDO_IDS_APART]
        assert await _undo_ids(pool, schema) == {action_id: undo_action_id(action_id) for action_id in ids}
        results = PgUndoResults(pool, schema)
        assert [await results.original_of(undo_action_id(action_id), "acme") for action_id in ids] == ids
        assert await results.original_of(undo_action_id("a-1"), "globex") is None  # another tenant's undo id tells nothing
        shutil.copy(MIGRATIONS / RESULT_EVENTS, folder / RESULT_EVENTS)
        assert await apply_migrations(pool, schema, folder) == [RESULT_EVENTS]
        kept = await results.get("a-1")
        assert kept is not None
        assert kept.event is None  # kept before the signed event was: its undo is refused over the API (docs/autonomy.md)
        await results.keep(
            [KeptResult(_succeeded("a-2", "acme", "tag_ticket", UNTAG), None)]
        )  # kept from now on: the service writes the id
        assert await results.original_of("undo-a-2", "acme") == "a-2"


async def test_an_undo_id_held_already_is_kept_without_it_and_migration_009_gives_each_row_its_own(infra: Any, tmp_path: Path) -> None:
    """An older copy kept a long id with the undo id it computed then (`undo-`, head, digest): a crafted 251-character id spelling
    it out is then kept by this copy without an undo id (no UniqueViolationError, no handler error), and 009 gives both their own."""
    long_id = "t-1:1." + "v" * 250
    digest = hashlib.sha256(long_id.encode()).hexdigest()[:32]
    crafted = long_id[:218] + "-" + digest
    async with _schema_before(infra, tmp_path / "migrations", UNDO_IDS_APART, RESULT_EVENTS) as (pool, schema):
        await _kept_as_before(pool, schema, long_id, undo_id="undo-" + crafted)  # what undo_action_id(long_id) was before 009
        results = PgUndoResults(pool, schema)
        assert await results.keep([KeptResult(_succeeded(crafted, "acme", "tag_ticket", UNTAG), None)]) == [crafted]
        assert await results.get(crafted) is not None  # its undo can still be proposed
        assert (
            await results.keep([KeptResult(_succeeded(crafted, "acme", "tag_ticket", UNTAG), None)]) == []
        )  # a redelivery: kept already, no clash
        assert await _undo_ids(pool, schema) == {long_id: "undo-" + crafted, crafted: None}
        shutil.copy(MIGRATIONS / UNDO_IDS_APART, tmp_path / "migrations" / UNDO_IDS_APART)
        assert await apply_migrations(pool, schema, tmp_path / "migrations") == [UNDO_IDS_APART]
        assert await _undo_ids(pool, schema) == {long_id: "undo~" + long_id[:218] + "-" + digest, crafted: "undo-" + crafted}
        assert await _undo_ids(pool, schema) == {long_id: undo_action_id(long_id), crafted: undo_action_id(crafted)}
        assert await results.original_of(undo_action_id(long_id), "acme") == long_id
        assert await results.original_of(undo_action_id(crafted), "acme") == crafted


async def test_the_undo_of_an_undo_is_refused_and_an_undone_action_is_not_undone_again(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: Any
) -> None:
    h = await start_approval()
    headers = {"Authorization": f"Bearer {await h.token('bob@acme.example', ['support'])}"}
    original = f"a-{uuid.uuid4().hex[:10]}"
    undo = undo_action_id(original)
    for data in (_succeeded(original, h.tenant, "tag_ticket", UNTAG), _succeeded(undo, h.tenant, "untag_ticket", RETAG)):
        await h.publish("actions.results", s.ActionSucceeded.build(data, source="tidegate/executor"))
    await wait_for(lambda: PgUndoResults(h.proc.pool).get(undo), what="the undo's result kept")  # type: ignore[arg-type]
    await wait_for(lambda: h.repo.action_event(undo, "tidegate.action.succeeded"), what="the undo's result seen")

    of_undo = await http.post(f"{h.url}/api/v1/actions/{undo}/undo", headers=headers)
    assert (of_undo.status_code, of_undo.json()["detail"]["code"]) == (422, "undo_irreversible")
    assert f"{undo} is the undo of {original}" in of_undo.json()["detail"]["message"]
    again = await http.post(f"{h.url}/api/v1/actions/{original}/undo", headers=headers)
    assert (again.status_code, again.json()["detail"]["code"]) == (422, "action_id_reused")
    assert f"was undone already by {undo}" in again.json()["detail"]["message"]
