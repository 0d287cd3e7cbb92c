"""The approval service's own database login, in an attacker's hands, tries to turn an approver's undo into a call of its choice.

security4 F2: `approval.undo_results` kept the executor's result as plain JSON and the undo API proposed its plan, signed
by the approval key. The attacker holds only `tidegate_approval`'s login (no key). Against the real service, bus and
database, it rewrites a kept row's undo plan, edits the signed event kept beside it, moves another action's signed
result into a row, strips the signature, and leaves a row as one kept before there was an event: each undo is refused
422 `undo_irreversible` saying why, nothing is proposed, a WARNING names the action and the row is counted; an
untouched row still undoes, with the executor's plan.
"""

from __future__ import annotations

import json
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
from services.approval._undo_store import PgUndoResults

pytestmark = pytest.mark.integration

UNTAG = s.UndoPlan(status="ready", tool="untag_ticket", args={"ticket_id": "T-1", "tags": ["refund"]})
PLANTED = {"tool": "issue_refund", "args": {"payee_id": "cus_attacker", "amount_usd": 900.0, "order_id": "O-9"}, "status": "ready"}
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


async def _kept(h: ApprovalHarness, wait_for: WaitFor) -> dict[str, str]:
    """Six succeeded calls of the tenant, each with the executor's undo plan, published signed and kept by the service."""
    ids = {name: f"a-{name}-{uuid.uuid4().hex[:8]}" for name in ("genuine", "plan", "event", "swapped", "stripped", "before")}
    kept = PgUndoResults(h.proc.pool)  # type: ignore[arg-type]
    for action_id in ids.values():
        data = s.ActionResultData(
            action_id=action_id,
            task_id=f"t-{action_id}",
            tenant_id=h.tenant,
            step=1,
            tool="tag_ticket",
            status="succeeded",
            result={"tags": ["refund"]},
            attempts=1,
            duration_ms=1,
            undo=UNTAG,
        )
        await h.publish("actions.results", s.ActionSucceeded.build(data, source="tidegate/executor"))
    for action_id in ids.values():
        await wait_for(lambda a=action_id: kept.get(a), what=f"the result of {action_id} kept for its undo")
    return ids


async def _tamper(db: asyncpg.Connection, ids: dict[str, str]) -> None:
    """What the login does to five of the rows (the sixth stays as the service kept it)."""
    # security4's probe t7_approval_login_undo.sh: the row's undo plan rewritten to a call of the attacker's choice
    await db.execute(
        "UPDATE approval.undo_results SET result = jsonb_set(result, '{undo}', $1::jsonb) WHERE action_id = $2",
        json.dumps(PLANTED),
        ids["plan"],
    )
    # the same in the signed event kept beside it (its signature no longer holds), and in the row's copy
    event = json.loads(await db.fetchval("SELECT event FROM approval.undo_results WHERE action_id = $1", ids["event"]))
    event["data"]["undo"] = PLANTED
    await db.execute(
        "UPDATE approval.undo_results SET event = $1, result = jsonb_set(result, '{undo}', $2::jsonb) WHERE action_id = $3",
        json.dumps(event),
        json.dumps(PLANTED),
        ids["event"],
    )
    # another action's signed result (and its row's copy) moved into this row
    await db.execute(
        "UPDATE approval.undo_results SET (event, result) = (SELECT event, result FROM approval.undo_results WHERE action_id = $1) "
        "WHERE action_id = $2",
        ids["genuine"],
        ids["swapped"],
    )
    # the signature stripped
    stripped = json.loads(await db.fetchval("SELECT event FROM approval.undo_results WHERE action_id = $1", ids["stripped"]))
    del stripped["signature"], stripped["keyid"]
    await db.execute("UPDATE approval.undo_results SET event = $1 WHERE action_id = $2", json.dumps(stripped), ids["stripped"])
    # a row as kept before migration 014: no event
    await db.execute("UPDATE approval.undo_results SET event = NULL WHERE action_id = $1", ids["before"])


async def test_the_approval_login_cannot_choose_what_an_approvers_undo_proposes(
    start_approval: StartApproval,
    http: httpx.AsyncClient,
    attacker: asyncpg.Connection,
    wait_for: WaitFor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = await start_approval()
    ids = await _kept(h, wait_for)
    await _tamper(attacker, ids)
    bob = {"Authorization": f"Bearer {await h.token('bob@acme.example', ['support'])}"}
    counted = {"invalid": refused("invalid"), "unsigned": refused("unsigned")}
    caplog.set_level(logging.WARNING)

    answers = {name: await http.post(f"{h.url}/api/v1/actions/{action_id}/undo", headers=bob) for name, action_id in ids.items()}

    says = {
        "plan": "was changed in the database",
        "event": "does not verify",
        "swapped": f"the executor's signed result of another action ({ids['genuine']}",
        "stripped": "carries no keyid/signature",
        "before": "carries no signed result event of the executor (it was kept before this release)",
    }
    for name, said in says.items():
        answer = answers[name]
        assert (answer.status_code, answer.json()["detail"]["code"]) == (422, "undo_irreversible"), (name, answer.text)
        message = answer.json()["detail"]["message"]
        assert said in message, (name, message)
        assert f"nothing was proposed; an operator can undo the call with `tidegate undo {ids[name]}`" in message
        assert f"the result kept for the undo of action {ids[name]} (tag_ticket, tenant {h.tenant}" in caplog.text  # the WARNING
    assert "rotate that login's password" in caplog.text
    assert (refused("invalid") - counted["invalid"], refused("unsigned") - counted["unsigned"]) == (3, 2)

    genuine = answers["genuine"]
    assert genuine.status_code == 200, genuine.text
    assert (genuine.json()["tool"], genuine.json()["args"], genuine.json()["undoes"]) == (UNTAG.tool, UNTAG.args, ids["genuine"])
    proposed = await read_topic(h.kit.kafka_bootstrap, h.bus.topic("actions.proposed"), "actions.proposed")
    undone = {p.data.undoes: (p.data.tool, p.data.args) for p in proposed if p.data.undoes in ids.values()}
    assert undone == {ids["genuine"]: (UNTAG.tool, UNTAG.args)}  # nothing planted, nothing for a refused row
