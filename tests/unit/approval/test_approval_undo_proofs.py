"""The approval API proposes an undo only from the executor's signed result event it kept for that very action (security4 F2).

Over the in-memory twin: the kept row is what the service's database login could write. The attacker's versions of
it, as the real service, bus and database see them, are in tests/security/test_approval_login_undo.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_approval_service_api import World, bearer, world  # noqa: F401  (the fixture)

import schemas as s
from servicekit import SigningKey, encode_signed
from servicekit.deliveries import publishing_for
from servicekit.metrics import ROWS_REFUSED
from servicekit.received import received, receiving
from services.approval._undo_store import InMemoryUndoResults, KeptResult

UNTAG = s.UndoPlan(status="ready", tool="untag_ticket", args={"ticket_id": "T-1", "tags": ["refund"]})


def _succeeded(action_id: str, undo: s.UndoPlan = UNTAG) -> s.ActionSucceeded:
    data = s.ActionResultData(
        action_id=action_id, task_id="t-1", tenant_id="acme", step=1, tool="tag_ticket", status="succeeded",
        result={}, attempts=1, duration_ms=1.0, undo=undo,
    )  # fmt: skip
    return s.ActionSucceeded.build(data, source="tidegate/executor")


def _refused(reason: str) -> float:
    return ROWS_REFUSED.labels("approval", "undo_results", reason)._value.get()


async def _undo(world: World, action_id: str) -> Any:  # noqa: F811
    return await world.client.post(f"/api/v1/actions/{action_id}/undo", headers=bearer(world.tokens["bob"]))


def _proposed(world: World) -> list[Any]:  # noqa: F811
    return [e for _, e in world.bus.events if e.type == "tidegate.action.proposed"]


async def test_the_plan_proposed_is_the_signed_events_and_a_row_whose_copy_was_changed_is_refused(world: World) -> None:  # noqa: F811
    await world.receive(_succeeded("a-1"))
    await world.receive(_succeeded("a-2"))
    kept = world.service.undo_results
    assert isinstance(kept, InMemoryUndoResults)
    planted = s.UndoPlan(status="ready", tool="issue_refund", args={"payee_id": "cus_x", "amount_usd": 900.0, "order_id": "O-1"})
    row = kept.results["a-2"]
    kept.results["a-2"] = KeptResult(row.result.model_copy(update={"undo": planted}), row.event)
    before = _refused("invalid")

    answer = await _undo(world, "a-1")
    assert answer.status_code == 200, answer.text
    changed = await _undo(world, "a-2")

    assert (changed.status_code, changed.json()["detail"]["code"]) == (422, "undo_irreversible")
    assert "was changed in the database" in changed.json()["detail"]["message"]
    assert _refused("invalid") == before + 1
    assert [(p.data.undoes, p.data.tool, p.data.args) for p in _proposed(world)] == [("a-1", UNTAG.tool, UNTAG.args)]


@pytest.mark.parametrize("signer", ["approval", "planner"])
async def test_a_result_event_no_executor_signed_is_refused(world: World, signer: str, tmp_path: Any) -> None:  # noqa: F811
    """Even the approval service's own key cannot make a result the undo API trusts: only the executor produces one."""
    event = _succeeded("a-3")
    raw = encode_signed(event, SigningKey.load_or_create(tmp_path, signer))
    await world.service.on_result(event.data, event_type=event.type, event_id=event.id, at=world.clock(), signed=raw)

    answer = await _undo(world, "a-3")

    assert (answer.status_code, answer.json()["detail"]["code"]) == (422, "undo_irreversible")
    assert f"service {signer} may not produce tidegate.action.succeeded" in answer.json()["detail"]["message"]
    assert not _proposed(world)


async def test_without_the_deployments_keys_no_kept_event_is_trusted(world: World) -> None:  # noqa: F811
    world.service.authority = None
    await world.receive(_succeeded("a-4"))
    answer = await _undo(world, "a-4")
    assert answer.status_code == 422
    assert "cannot be verified (this service was given no public keys)" in answer.json()["detail"]["message"]
    assert not _proposed(world)


def test_a_handler_finds_the_bytes_its_event_came_in() -> None:
    """One event at a time: the record its handler runs for (`publishing_for`); a polled batch: each event's own record."""

    class Record:
        def __init__(self, value: bytes) -> None:
            self.value = value

    one, two = _succeeded("a-5"), _succeeded("a-6")
    assert received(one) is None  # outside a consume path
    token = publishing_for.set(Record(b"one"))  # type: ignore[arg-type]
    try:
        assert received(one) == b"one"
    finally:
        publishing_for.reset(token)
    with receiving([one, two], [Record(b"1"), Record(b"2")]):  # type: ignore[list-item]
        assert (received(one), received(two), received(_succeeded("a-7"))) == (b"1", b"2", None)
    assert received(two) is None
