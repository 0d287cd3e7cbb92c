"""A tenant who reads another's long action id crafts its own id to take the other's undo id (security review 2, finding 3).

The real approval service on the real bus and database: globex's action has the crafted 251-character id,
`<first 218 characters of acme's id>-<32 hex of its SHA-256>`, which was the undo id's tail of acme's long id.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from approval_harness import StartApproval, read_topic

import schemas as s
from servicekit.undo import undo_action_id
from services.approval._undo_store import PgUndoResults

UNTAG = s.UndoPlan(status="ready", tool="untag_ticket", args={"ticket_id": "T-1", "tags": ["refund"]})
WaitFor = Callable[..., Awaitable[Any]]


def _succeeded(action_id: str, tenant: str) -> s.ActionSucceeded:
    data = s.ActionResultData(
        action_id=action_id,
        task_id="t-1",
        tenant_id=tenant,
        tool="tag_ticket",
        status="succeeded",
        result={},
        attempts=1,
        duration_ms=1,
        undo=UNTAG,
    )
    return s.ActionSucceeded.build(data, source="tidegate/executor")


async def test_a_crafted_action_id_neither_blocks_nor_takes_another_tenants_undo(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: WaitFor
) -> None:
    h = await start_approval()
    victims = (f"t-{uuid.uuid4().hex}:1." + "v" * 260)[:256]  # an outside agent's id: the contract allows 256 characters
    crafted = victims[:218] + "-" + hashlib.sha256(victims.encode()).hexdigest()[:32]
    assert len(crafted) == 251
    assert undo_action_id(crafted) != undo_action_id(victims)
    kept = PgUndoResults(h.proc.pool)  # type: ignore[arg-type]
    await h.publish("actions.results", _succeeded(crafted, f"globex-{uuid.uuid4().hex[:6]}"))  # the attacker's, kept first
    await wait_for(lambda: kept.get(crafted), what="the attacker's result kept")
    await h.publish("actions.results", _succeeded(victims, h.tenant))
    await wait_for(lambda: kept.get(victims), what="the victim's result kept for its undo")

    bob = await h.token("bob@acme.example", ["support"])
    undo = await http.post(f"{h.url}/api/v1/actions/{victims}/undo", headers={"Authorization": f"Bearer {bob}"})
    assert undo.status_code == 200, undo.text
    assert (undo.json()["action_id"], undo.json()["undoes"]) == (undo_action_id(victims), victims)
    dead = await read_topic(h.kit.kafka_bootstrap, h.bus.topic("deadletter"), "deadletter")
    assert [(d.data.code, d.data.error) for d in dead if d.data.service == "approval"] == []  # no handler error on either result
