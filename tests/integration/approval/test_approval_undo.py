"""The approval API's undo on the real bus and database: an undo is known as one, by its id, and not undone (migration 008)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import httpx
from approval_harness import StartApproval

import schemas as s
from servicekit import REPO_ROOT, create_pool
from servicekit.db import apply_migrations
from servicekit.undo import undo_action_id
from services.approval._undo_store import PgUndoResults

MIGRATIONS = REPO_ROOT / "services" / "approval" / "migrations"
UNDO_IDS = "008_undo_ids.sql"
UNTAG = s.UndoPlan(status="ready", tool="untag_ticket", args={"ticket_id": "T-1", "tags": ["refund"]})
RETAG = s.UndoPlan(status="ready", tool="tag_ticket", args={"ticket_id": "T-1", "tags": ["refund"]})


def _succeeded(action_id: str, tenant: str, tool: str, undo: s.UndoPlan) -> s.ActionResultData:
    return s.ActionResultData(
        action_id=action_id, task_id="t-1", tenant_id=tenant, tool=tool, status="succeeded", result={}, attempts=1, duration_ms=1, undo=undo
    )


async def test_results_kept_before_the_migration_get_their_undo_id_as_servicekit_computes_it(infra: Any, tmp_path: Path) -> None:
    schema = f"approval_undo_ids_{uuid.uuid4().hex[:8]}"
    before = tmp_path / "migrations"
    before.mkdir()
    for path in sorted(MIGRATIONS.glob("*.sql")):
        if path.name < UNDO_IDS:
            shutil.copy(path, before / path.name)
    pool = await create_pool(infra.database_url, max_size=2)
    try:
        await apply_migrations(pool, schema, before)
        ids = ["a-1", "é" * 256, "x" * 251, "x" * 252]  # short, cut with a digest (of UTF-8 bytes), the last that fits, the first cut
        for action_id in ids:
            await pool.execute(
                f'INSERT INTO "{schema}".undo_results (action_id, tenant_id, task_id, result) VALUES ($1, $2, $3, $4::jsonb)',
                action_id,
                "acme",
                "t-1",
                _succeeded(action_id, "acme", "tag_ticket", UNTAG).model_dump_json(),
            )
        shutil.copy(MIGRATIONS / UNDO_IDS, before / UNDO_IDS)
        assert await apply_migrations(pool, schema, before) == [UNDO_IDS]
        stored = {r["action_id"]: r["undo_id"] for r in await pool.fetch(f'SELECT action_id, undo_id FROM "{schema}".undo_results')}
        assert stored == {action_id: undo_action_id(action_id) for action_id in ids}
        results = PgUndoResults(pool, schema)
        assert [await results.original_of(undo_action_id(action_id), "acme") for action_id in ids] == ids
        assert await results.original_of(undo_action_id("a-1"), "globex") is None  # another tenant's undo id tells nothing
        await results.keep([_succeeded("a-2", "acme", "tag_ticket", UNTAG)])  # kept from now on: the service writes the id
        assert await results.original_of("undo-a-2", "acme") == "a-2"
    finally:
        await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await pool.close()


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
