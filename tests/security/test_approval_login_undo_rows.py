"""The approval service's own database login writes what is not a result into `approval.undo_results`, or rewrites the undo links.

The attacker holds only `tidegate_approval`'s login (no key). Against the real service, bus and database:

- a kept row whose copy of the result is not one (JSON the service never writes), for the action asked or for its undo,
  made the undo API answer HTTP 500; it is refused as any other kept result: 422 `undo_irreversible` saying why, a
  WARNING naming the action, the row counted, nothing proposed;
- the `undo_id` column (which kept action an undo undoes, `original_of`) rewritten in every way the login can: the plan
  proposed is still only ever the one of the executor's signed result of the action asked for (the link can only make
  an undo refused, or not refused as the undo of an undo: its own signed inverse is then proposed, which policy decides).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from approval_harness import ApprovalHarness, StartApproval, read_topic

import schemas as s
from servicekit import KitSettings
from servicekit.dbroles import service_database_url
from servicekit.metrics import ROWS_REFUSED
from servicekit.undo import undo_action_id
from services.approval._undo_store import PgUndoResults

pytestmark = pytest.mark.integration

UNTAG = s.UndoPlan(status="ready", tool="untag_ticket", args={"ticket_id": "T-1", "tags": ["refund"]})
RETAG = s.UndoPlan(status="ready", tool="tag_ticket", args={"ticket_id": "T-1", "tags": ["refund"]})
NOT_RESULTS = ['"garbage"', "{}", "null", '{"action_id": 7}']  # JSON (the column is jsonb) the service never writes there
WaitFor = Callable[..., Awaitable[Any]]


def refused(reason: str) -> float:
    """How many kept results the approval service refused for `reason` so far (`tidegate_rows_refused_total`)."""
    return ROWS_REFUSED.labels("approval", "undo_results", reason)._value.get()


@pytest.fixture
async def attacker(kit: KitSettings) -> AsyncIterator[asyncpg.Connection]:
    """The approval service's own login, exactly as the service builds its DSN: all the attacker holds."""
    conn = await asyncpg.connect(service_database_url(kit, "approval"))
    yield conn
    await conn.close()


async def _keep(h: ApprovalHarness, wait_for: WaitFor, plans: dict[str, s.UndoPlan]) -> None:
    """Succeeded calls of the tenant (action id → the executor's undo plan), published signed and kept by the service."""
    for action_id, plan in plans.items():
        data = s.ActionResultData(
            action_id=action_id, task_id=f"t-{action_id}", tenant_id=h.tenant, step=1, tool="tag_ticket", status="succeeded",
            result={"tags": ["refund"]}, attempts=1, duration_ms=1, undo=plan,
        )  # fmt: skip
        await h.publish("actions.results", s.ActionSucceeded.build(data, source="tidegate/executor"))
    kept = PgUndoResults(h.proc.pool)  # type: ignore[arg-type]
    for action_id in plans:
        await wait_for(lambda a=action_id: kept.get(a), what=f"the result of {action_id} kept for its undo")


async def _undone(h: ApprovalHarness, action_ids: set[str]) -> dict[str, tuple[str, dict[str, Any] | None]]:
    """The undos proposed of `action_ids`: what each undoes → (tool, args)."""
    proposed = await read_topic(h.kit.kafka_bootstrap, h.bus.topic("actions.proposed"), "actions.proposed")
    return {p.data.undoes: (p.data.tool, p.data.args) for p in proposed if p.data.undoes in action_ids}


async def test_a_kept_row_whose_copy_is_not_a_result_is_refused_not_an_error(
    start_approval: StartApproval,
    http: httpx.AsyncClient,
    attacker: asyncpg.Connection,
    wait_for: WaitFor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = await start_approval()
    run = uuid.uuid4().hex[:8]
    asked = {text: f"a-copy{n}-{run}" for n, text in enumerate(NOT_RESULTS)}  # the action's own row
    undone = {text: f"a-undo{n}-{run}" for n, text in enumerate(NOT_RESULTS)}  # the row of its undo
    genuine = f"a-genuine-{run}"
    await _keep(h, wait_for, dict.fromkeys([*asked.values(), *undone.values(), genuine], UNTAG))
    for text, action_id in asked.items():  # the attacker, as the approval's database login
        done = await attacker.execute("UPDATE approval.undo_results SET result = $1::jsonb WHERE action_id = $2", text, action_id)
        assert done == "UPDATE 1"
    for text, action_id in undone.items():  # a row for the undo, as if it had run (no undo id: the column is unique)
        done = await attacker.execute(
            "INSERT INTO approval.undo_results (action_id, tenant_id, task_id, result) VALUES ($1, $2, $3, $4::jsonb)",
            undo_action_id(action_id),
            h.tenant,
            f"t-{action_id}",
            text,
        )
        assert done == "INSERT 0 1"
    bob = {"Authorization": f"Bearer {await h.token('bob@acme.example', ['support'])}"}
    counted = refused("invalid")
    caplog.set_level(logging.WARNING)

    answers = {a: await http.post(f"{h.url}/api/v1/actions/{a}/undo", headers=bob) for a in [*asked.values(), *undone.values()]}

    for action_id, answer in answers.items():
        assert (answer.status_code, answer.json()["detail"]["code"]) == (422, "undo_irreversible"), (action_id, answer.text)
        message = answer.json()["detail"]["message"]
        assert f"nothing was proposed; an operator can undo the call with `tidegate undo {action_id}`" in message
        assert "was written in the database: its copy of the call is not a result (ValidationError" in message
    for action_id in asked.values():
        assert f"the result kept for the undo of action {action_id} (tenant {h.tenant}" in caplog.text  # the WARNING
    for action_id in undone.values():
        assert f"the result this service keeps for its undo {undo_action_id(action_id)} was written" in answers[action_id].text
        assert f"the result kept for action {undo_action_id(action_id)}, the undo of {action_id}" in caplog.text
    assert "rotate that login's password" in caplog.text
    assert refused("invalid") - counted == len(answers)

    answer = await http.post(f"{h.url}/api/v1/actions/{genuine}/undo", headers=bob)
    assert answer.status_code == 200, answer.text  # an untouched row still undoes
    assert await _undone(h, {*asked.values(), *undone.values(), genuine}) == {genuine: (UNTAG.tool, UNTAG.args)}


async def test_a_rewritten_undo_link_never_makes_the_undo_api_propose_a_plan_the_executor_did_not_sign(
    start_approval: StartApproval,
    http: httpx.AsyncClient,
    attacker: asyncpg.Connection,
    wait_for: WaitFor,
) -> None:
    """`original_of` reads the `undo_id` column: the login unlinks an undo from its original, and links another action as an undo."""
    h = await start_approval()
    run = uuid.uuid4().hex[:8]
    original, linked, innocent = f"a-orig-{run}", f"a-linked-{run}", f"a-innocent-{run}"
    undo = undo_action_id(original)
    await _keep(h, wait_for, {original: UNTAG, undo: RETAG, linked: UNTAG, innocent: UNTAG})  # `undo` ran: its plan re-tags
    bob = {"Authorization": f"Bearer {await h.token('bob@acme.example', ['support'])}"}
    before = await http.post(f"{h.url}/api/v1/actions/{undo}/undo", headers=bob)
    assert (before.status_code, before.json()["detail"]["code"]) == (422, "undo_irreversible")  # an undo is not undone
    assert f"is the undo of {original}" in before.json()["detail"]["message"]

    await attacker.execute("UPDATE approval.undo_results SET undo_id = NULL WHERE action_id = $1", original)  # unlinked
    await attacker.execute("UPDATE approval.undo_results SET undo_id = $1 WHERE action_id = $2", innocent, linked)  # made an undo
    unlinked = await http.post(f"{h.url}/api/v1/actions/{undo}/undo", headers=bob)
    made_an_undo = await http.post(f"{h.url}/api/v1/actions/{innocent}/undo", headers=bob)

    assert (made_an_undo.status_code, made_an_undo.json()["detail"]["code"]) == (422, "undo_irreversible")
    assert f"action {innocent} is the undo of {linked}" in made_an_undo.json()["detail"]["message"]  # refused, nothing else
    assert unlinked.status_code == 200, unlinked.text
    proposed = (unlinked.json()["tool"], unlinked.json()["args"], unlinked.json()["undoes"])
    assert proposed == (RETAG.tool, RETAG.args, undo)  # the undo's own signed plan (the inverse of its signed result), nothing else
    assert await _undone(h, {original, undo, linked, innocent}) == {undo: (RETAG.tool, RETAG.args)}
