"""Undo plans and proposals: args computed from the call, its result and the state before; refusals with reasons."""

from __future__ import annotations

import hashlib

import pytest

import schemas as s
from servicekit.undo import UndoRefused, plan_undo, undo_action_id, undo_proposal
from tidegate.ops.undo import undo_steps

UNTAG = s.UndoSpec.model_validate(
    {
        "tool": "untag_ticket",
        "before": {"tool": "get_ticket", "args": {"ticket_id": "args.ticket_id"}},
        "args": {"ticket_id": "args.ticket_id", "tags": {"from": "args.tags", "without": "before.tags"}},
    }
)


def test_only_what_the_call_changed_is_undone() -> None:
    plan = plan_undo(UNTAG, {"ticket_id": "T-1", "tags": ["a", "b"]}, {"tags": ["a", "b", "c"]}, {"tags": ["b", "c"]})
    assert (plan.status, plan.args) == ("ready", {"ticket_id": "T-1", "tags": ["a"]})


def test_a_missing_value_or_prior_state_makes_the_plan_unavailable_not_wrong() -> None:
    assert plan_undo(UNTAG, {"ticket_id": "T-1", "tags": ["a"]}, {}, None).status == "unavailable"
    spec = s.UndoSpec.model_validate({"tool": "delete_internal_note", "args": {"note_id": "result.note_id"}})
    assert plan_undo(spec, {}, {"created": True}, None).status == "unavailable"


def test_a_spec_is_either_a_tool_or_irreversible() -> None:
    with pytest.raises(ValueError, match="either a tool"):
        s.UndoSpec.model_validate({"tool": "x", "irreversible": "no"})
    with pytest.raises(ValueError, match="should match pattern"):
        s.UndoSpec.model_validate({"tool": "x", "args": {"a": "elsewhere.b"}})


def _result(undo: s.UndoPlan | None, status: str = "succeeded", action_id: str = "a-1") -> s.ActionResultData:
    return s.ActionResultData(
        action_id=action_id, task_id="t-1", tenant_id="acme", step=2, tool="tag_ticket", status=status, attempts=1, duration_ms=1, undo=undo
    )


def test_the_undo_is_an_ordinary_proposal_linked_to_the_original() -> None:
    plan = s.UndoPlan(status="ready", tool="untag_ticket", args={"ticket_id": "T-1", "tags": ["a"]})
    p = undo_proposal(_result(plan), requested_by="ops@acme.example", proposer="undo:ops@acme.example")
    assert (p.action_id, p.task_id, p.tool, p.args, p.undoes, p.requested_by) == (
        "undo-a-1",
        "t-1",
        "untag_ticket",
        {"ticket_id": "T-1", "tags": ["a"]},
        "a-1",
        "ops@acme.example",
    )


def test_a_crafted_id_of_251_characters_never_takes_a_long_ids_undo_id() -> None:
    """A long id's undo id was its head and a digest: a 251-character id spelling that out had the same undo id, so a tenant
    who read another's long id could take its undo id (the other's result then failed to be kept, its undo refused)."""
    long_id = "t-1:1." + "v" * 250
    crafted = long_id[:218] + "-" + hashlib.sha256(long_id.encode()).hexdigest()[:32]
    assert len(crafted) == 251
    assert undo_action_id(crafted) == "undo-" + crafted  # short enough: the plain form, unchanged
    assert undo_action_id(long_id) != undo_action_id(crafted)
    assert undo_action_id(long_id) == "undo~" + long_id[:218] + "-" + hashlib.sha256(long_id.encode()).hexdigest()[:32]
    assert len(undo_action_id(long_id)) == 256
    assert undo_action_id("é" * 300).startswith("undo~")  # characters, not bytes, are counted


@pytest.mark.parametrize(
    ("undo", "status", "words"),
    [
        (s.UndoPlan(status="irreversible", message="send a correction"), "succeeded", "irreversible: send a correction"),
        (None, "succeeded", "declares no undo"),
        (s.UndoPlan(status="ready", tool="t", args={}), "failed", "did not succeed"),
        (s.UndoPlan(status="nothing_to_undo", message="nothing to undo: tags would be empty"), "succeeded", "nothing to undo"),
    ],
)
def test_what_cannot_be_undone_is_refused_with_a_reason(undo: s.UndoPlan | None, status: str, words: str) -> None:
    with pytest.raises(UndoRefused) as refused:
        undo_proposal(_result(undo, status), requested_by="ops@acme.example", proposer="undo:ops")
    assert refused.value.code == s.ReasonCode.UNDO_IRREVERSIBLE
    assert words in refused.value.message


def test_undoing_a_task_goes_newest_first_and_never_twice() -> None:
    ready = s.UndoPlan(status="ready", tool="untag_ticket", args={"ticket_id": "T-1", "tags": ["a"]})
    first, second = _result(ready, action_id="a-1"), _result(ready, action_id="a-2")
    events = [s.ActionSucceeded.build(first, source="tidegate/executor"), s.ActionSucceeded.build(second, source="tidegate/executor")]
    steps = undo_steps(events, requested_by="ops")
    assert [st.action_id for st in steps] == ["a-2", "a-1"]
    proposed = s.ActionProposed.build(steps[0].proposal, source="external/undo")  # a-2's undo was proposed already
    assert [st.action_id for st in undo_steps([*events, proposed], requested_by="ops")] == ["a-1"]
