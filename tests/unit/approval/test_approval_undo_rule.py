"""The approval API's undo and `tidegate undo` refuse by one rule (`servicekit.undo.undo_refusal`), with the same words.

Each history is given to both: the approval service sees the decisions and results on the bus, the CLI reads
them (and the proposals) from the audit log. Where one refuses, the other refuses with the same code and message.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from typing import Any

import pytest
from test_approval_service_api import World, bearer, world  # noqa: F401  (the fixture)

import schemas as s
from servicekit import action_digest
from servicekit.undo import undo_action_id, undo_proposal
from services.approval._undo_store import InMemoryUndoResults, KeptResult
from tests.unit.executor_results import executor_result as _result

UNTAG = s.UndoPlan(status="ready", tool="untag_ticket", args={"ticket_id": "T-1", "tags": ["refund"]})
RETAG = s.UndoPlan(status="ready", tool="tag_ticket", args={"ticket_id": "T-1", "tags": ["refund"]})


def _decided(action_id: str, tool: str, outcome: str, *reasons: s.ReasonCode) -> s.Envelope:
    data = s.ActionDecidedData(
        action_id=action_id,
        task_id="t-1",
        tenant_id="acme",
        tool=tool,
        args=UNTAG.args or {},
        action_digest=action_digest("acme", tool, UNTAG.args or {}),
        outcome=outcome,  # type: ignore[arg-type]
        reasons=[s.Reason(code=r, policy_id="p") for r in reasons],
        policy_version="v1",
        latency_ms=1,
        requested_by="alice@acme.example",
    )
    return s.ActionDecided.build(data, source="tidegate/policy")


ORIGINAL = _result(s.ActionSucceeded, "a-1", "tag_ticket", "succeeded", undo=UNTAG)
UNDO = s.ActionProposed.build(
    undo_proposal(ORIGINAL.data, requested_by="ops", proposer="undo:ops"),  # type: ignore[arg-type]
    source="external/undo/ops",
)
ERROR = s.ErrorInfo(type="http_503", message="helpdesk down")

CASES = {
    "an undo itself": ([ORIGINAL, UNDO, _result(s.ActionSucceeded, "undo-a-1", "untag_ticket", "succeeded", undo=RETAG)], "undo-a-1"),
    "undone already": ([ORIGINAL, UNDO, _result(s.ActionSucceeded, "undo-a-1", "untag_ticket", "succeeded")], "a-1"),
    "its undo failed": ([ORIGINAL, UNDO, _result(s.ActionFailed, "undo-a-1", "untag_ticket", "failed", error=ERROR)], "a-1"),
    "its undo denied": ([ORIGINAL, UNDO, _decided("undo-a-1", "untag_ticket", "deny", s.ReasonCode.KILL_SWITCH)], "a-1"),
    "its undo pending": ([ORIGINAL, UNDO, _decided("undo-a-1", "untag_ticket", "escalate", s.ReasonCode.NEEDS_HUMAN_APPROVAL)], "a-1"),
    "failed": ([_result(s.ActionFailed, "a-2", "tag_ticket", "failed", error=ERROR)], "a-2"),
    "unknown": ([_result(s.ActionUnknown, "a-2", "tag_ticket", "unknown", error=s.ErrorInfo(type="interrupted", message="gone"))], "a-2"),
    "denied": ([_decided("a-2", "tag_ticket", "deny", s.ReasonCode.KILL_SWITCH)], "a-2"),
    "pending": ([_decided("a-2", "tag_ticket", "escalate", s.ReasonCode.NEEDS_HUMAN_APPROVAL)], "a-2"),
    "no undo declared": ([_result(s.ActionSucceeded, "a-2", "tag_ticket", "succeeded")], "a-2"),
    "irreversible": (
        [_result(s.ActionSucceeded, "a-2", "tag_ticket", "succeeded", undo=s.UndoPlan(status="irreversible", message="mail"))],
        "a-2",
    ),
}


async def _api(world: World, events: list[s.Envelope], action_id: str) -> Any:  # noqa: F811
    """What the approval API answers, once the service has seen the events the bus carries to it (not the proposals)."""
    for n, event in enumerate(events):
        at = world.clock() + timedelta(seconds=n)
        if isinstance(event, s.ActionDecided):
            await world.service.on_decided(event.data, event_id=event.id, at=at)
        elif not isinstance(event, s.ActionProposed):
            await world.receive(event, at)
    return await world.client.post(f"/api/v1/actions/{action_id}/undo", headers=bearer(world.tokens["bob"]))


def _proposed(world: World) -> list[Any]:  # noqa: F811
    return [e for _, e in world.bus.events if e.type == "tidegate.action.proposed"]


def _cli(monkeypatch: pytest.MonkeyPatch, events: list[s.Envelope], action_id: str) -> Any:
    """What `tidegate undo ACTION_ID --dry-run` says, over an audit log that holds `events`."""
    from typer.testing import CliRunner

    import services.audit
    import tidegate.ops.undo
    from tidegate.cli import app

    class Log:
        async def close(self) -> None:
            return None

    async def connect(*args: Any, **kw: Any) -> Log:
        return Log()

    async def read_recorded(log: Any, prefix: str, *, action_id: str | None = None, task_id: str | None = None) -> list[Any]:
        return [e for e in events if e.data.action_id == action_id]  # type: ignore[attr-defined]

    monkeypatch.setattr(services.audit.PostgresAuditLog, "connect", connect)
    monkeypatch.setattr(tidegate.ops.undo, "read_recorded", read_recorded)
    return CliRunner().invoke(app, ["undo", action_id, "--dry-run"], env={"COLUMNS": "400"})


@pytest.mark.parametrize("case", list(CASES))
async def test_the_api_and_the_cli_refuse_alike(world: World, monkeypatch: pytest.MonkeyPatch, case: str) -> None:  # noqa: F811
    events, action_id = CASES[case]
    answer = await _api(world, events, action_id)
    assert answer.status_code == 422, answer.text
    assert not _proposed(world)
    refused = answer.json()["detail"]
    said = await asyncio.to_thread(_cli, monkeypatch, events, action_id)  # the CLI runs its own event loop
    assert said.exit_code == 1
    assert f"{refused['code']}: {refused['message']}" in " ".join(said.output.split())


async def test_the_undo_of_an_undo_is_refused_and_says_to_propose_the_original_call_again(world: World) -> None:  # noqa: F811
    events, _ = CASES["an undo itself"]
    answer = await _api(world, events, "undo-a-1")
    assert (answer.status_code, answer.json()["detail"]["code"]) == (422, "undo_irreversible")
    message = answer.json()["detail"]["message"]
    assert "undo-a-1 is the undo of a-1" in message
    assert "propose that call again as a new action" in message
    assert not _proposed(world)  # no undo-undo-a-1


async def test_an_undo_known_by_its_id_only_is_refused_too(world: World) -> None:  # noqa: F811
    """An original id past 251 characters (the contract allows 256) gives its undo a cut id ending in a digest: still known as an undo."""
    long_id = "a" * 256
    original = _result(s.ActionSucceeded, long_id, "tag_ticket", "succeeded", undo=UNTAG)
    undo = _result(s.ActionSucceeded, undo_action_id(long_id), "untag_ticket", "succeeded", undo=RETAG)
    answer = await _api(world, [original, undo], undo_action_id(long_id))
    assert (answer.status_code, answer.json()["detail"]["code"]) == (422, "undo_irreversible")
    assert f"is the undo of {long_id}" in answer.json()["detail"]["message"]


async def test_an_action_of_another_tenant_or_never_seen_is_not_found(world: World) -> None:  # noqa: F811
    theirs = _result(s.ActionFailed, "a-9", "tag_ticket", "failed", error=ERROR)
    theirs = type(theirs).build(theirs.data.model_copy(update={"tenant_id": "globex"}), source="tidegate/executor")  # type: ignore[attr-defined]
    assert (await _api(world, [theirs], "a-9")).status_code == 404
    assert (await _api(world, [], "never-seen")).status_code == 404


async def test_a_result_whose_undo_id_another_kept_action_holds_is_kept_without_it_and_said(
    world: World,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A row an older copy of the service kept can hold the undo id a result gets now (its long id's old `undo-<head>-<digest>`):
    the result is still kept, so its undo can be proposed, and the clash is logged as itself, never a handler error."""
    long_id = "t-1:1." + "v" * 250
    crafted = long_id[:218] + "-" + hashlib.sha256(long_id.encode()).hexdigest()[:32]
    kept = world.service.undo_results
    assert isinstance(kept, InMemoryUndoResults)
    kept.results[long_id] = KeptResult(_result(s.ActionSucceeded, long_id, "tag_ticket", "succeeded", undo=UNTAG).data, None)  # type: ignore[arg-type]
    kept.undo_ids[long_id] = "undo-" + crafted
    answer = await _api(world, [_result(s.ActionSucceeded, crafted, "tag_ticket", "succeeded", undo=UNTAG)], crafted)
    assert answer.status_code == 200, answer.text
    assert [p.data.undoes for p in _proposed(world)] == [crafted]
    assert kept.undo_ids[crafted] is None
    assert f"the undo id of {crafted} is held by another kept action" in caplog.text


@pytest.mark.parametrize("batch", [False, True])
async def test_a_result_is_kept_for_undo_before_it_shows_among_the_task_events(world: World, batch: bool) -> None:  # noqa: F811
    """An approver who asks right after the result must not be told the call 'declares no undo' (the events showed it succeeded first)."""
    result = _result(s.ActionSucceeded, "a-7", "tag_ticket", "succeeded", undo=UNTAG)
    kept_when_recorded: list[bool] = []
    record = world.service.repo.record_task_events

    async def recording(events: Any) -> Any:
        kept_when_recorded.append(await world.service.undo_results.get("a-7") is not None)
        return await record(events)

    world.service.repo.record_task_events = recording  # type: ignore[method-assign]
    if batch:
        await world.service.on_result_batch([result])  # type: ignore[list-item]
    else:
        await world.receive(result)
    assert kept_when_recorded == [True]
