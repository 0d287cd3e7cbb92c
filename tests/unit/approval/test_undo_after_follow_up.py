"""An unknown outcome a person resolved is undone (or refused) by what they found, alike by the approval API and `tidegate undo`.

`confirmed_not_done`: nothing was done to undo. `confirmed_done`: the call took effect, but the executor never had its result
to plan the undo from: a person corrects it by hand. Neither says any more that "its outcome is unknown".
"""

from __future__ import annotations

import asyncio

import pytest
from test_approval_service_api import World, bearer, decided, world  # noqa: F401  (the fixture)
from test_approval_undo_rule import _api, _cli, _proposed

import schemas as s


async def _resolved(world: World, verb: str) -> list[s.Envelope]:  # noqa: F811
    """The action's recorded story: decided, an unknown outcome, and its follow-up resolved by bob (`approve`: it happened)."""
    allowed = s.ActionDecided.build(decided(), source="tidegate/policy")
    unknown = s.ActionUnknown.build(
        s.ActionResultData(
            action_id="a-1", task_id="t-1", tenant_id="acme", tool="issue_refund", status="unknown",
            error=s.ErrorInfo(type="timeout", message="payments did not answer"), attempts=1, duration_ms=10_000,
        ),
        source="tidegate/executor",
    )  # fmt: skip
    await world.service.on_decided(allowed.data, event_id=allowed.id, at=world.clock())
    follow_up = await world.service.on_result(unknown.data, event_type=unknown.type, event_id=unknown.id, at=world.clock())
    assert follow_up is not None
    before = len(world.bus.events)
    body = {"action_digest": follow_up.action_digest} if verb == "approve" else {"comment": "not in the ledger"}
    done = await world.client.post(f"/api/v1/approvals/{follow_up.approval_id}/{verb}", json=body, headers=bearer(world.tokens["bob"]))
    assert done.json()["status"] == "resolved", done.text
    [(_, resolution)] = world.bus.events[before:]
    return [allowed, unknown, resolution]


@pytest.mark.parametrize(
    ("verb", "says"),
    [
        ("approve", "its unknown outcome was resolved confirmed_done by bob@acme.example, but the executor never received"),
        ("reject", "did not take effect: its unknown outcome was resolved confirmed_not_done by bob@acme.example; nothing was done"),
    ],
)
async def test_a_resolved_follow_up_is_what_the_undo_rule_reads(
    world: World,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    verb: str,
    says: str,
) -> None:
    events = await _resolved(world, verb)
    answer = await world.client.post("/api/v1/actions/a-1/undo", headers=bearer(world.tokens["bob"]))
    assert answer.status_code == 422, answer.text
    assert not _proposed(world)
    refused = answer.json()["detail"]
    assert refused["code"] == "undo_irreversible"
    assert says in refused["message"]
    assert "outcome is unknown" not in refused["message"]
    said = await asyncio.to_thread(_cli, monkeypatch, events, "a-1")  # the CLI reads the same story from the audit log
    assert said.exit_code == 1
    assert f"{refused['code']}: {refused['message']}" in " ".join(said.output.split())


async def test_an_unresolved_unknown_outcome_still_says_a_person_must_check(world: World) -> None:  # noqa: F811
    unknown = (await _resolved(world, "approve"))[1]
    other = type(unknown).build(unknown.data.model_copy(update={"action_id": "a-3"}), source="tidegate/executor")  # type: ignore[attr-defined]
    answer = await _api(world, [other], "a-3")  # an unknown outcome of another action, whose follow-up nobody resolved
    assert answer.status_code == 422
    assert "its outcome is unknown" in answer.json()["detail"]["message"]
