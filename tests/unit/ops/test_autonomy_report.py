"""The autonomy report on a recorded window: it proposes the widest threshold no rejected call passes, and what-if replays it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import schemas as s
from servicekit import REPO_ROOT, ToolCatalog
from services.policy import Call, Controls, History, PackSource, compile_pack, decide
from tidegate.ops.autonomy import autonomy_report, human_outcomes
from tidegate.ops.whatif import evaluate

CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
PACK = compile_pack(PackSource.from_dir(REPO_ROOT / "policies" / "default"), CATALOG)
LIVE = PACK.settings.with_record({"allow_autonomous": True, "min_confidence": 0.9})


def _recorded(confidence: float, human: str | None, reason: str | None = None) -> list[Any]:
    """A proposal of a tag with this confidence, its decision under the live settings, and a human's answer."""
    p = s.ActionProposedData(
        action_id=f"a-{uuid.uuid4().hex[:8]}",
        task_id=f"t-{uuid.uuid4().hex[:8]}",
        tenant_id="acme",
        step=1,
        tool="tag_ticket",
        args={"ticket_id": "T-1001", "tags": ["refund"]},
        proposer="external:agent",
        mode="autonomous",
        confidence=confidence,
    )
    v = decide(PACK, Call.from_proposal(p), History(), Controls(tenant=LIVE))
    d = s.ActionDecidedData(
        action_id=p.action_id,
        task_id=p.task_id,
        tenant_id="acme",
        tool=p.tool,
        args=p.args,
        action_digest="x",
        outcome=v.outcome,
        reasons=list(v.reasons),
        policy_version=PACK.version,
        risk=v.risk,
        latency_ms=1,
        facts=v.facts,
        mode="autonomous",
    )
    events: list[Any] = [s.ActionProposed.build(p, source="agent"), s.ActionDecided.build(d, source="tidegate/policy")]
    if human is not None:
        data = s.ApprovalData(
            approval_id=f"ap-{p.action_id}",
            action_id=p.action_id,
            task_id=p.task_id,
            tenant_id="acme",
            tool=p.tool,
            args=p.args,
            action_digest="x",
            approver="bob@acme.example",
            edited_args={"ticket_id": "T-1001", "tags": ["billing"]} if human == "edited" else None,
            review_reason=reason or ("wrong_recipient" if human in ("rejected", "edited") else None),
            expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        )
        kind = s.ApprovalRejected if human == "rejected" else s.ApprovalGranted
        events.append(kind.build(data, source="tidegate/approval"))
    return events


def test_the_report_proposes_the_widest_threshold_no_rejected_call_passes_and_whatif_counts_the_saved_touches() -> None:
    window = [
        *_recorded(0.85, "approved"),
        *_recorded(0.75, "approved"),
        *_recorded(0.62, "approved"),
        *_recorded(0.55, "rejected"),
        *_recorded(0.40, "approved"),  # below the rejected one: a human keeps seeing calls like it
        *_recorded(0.95, None),  # over the live threshold: allowed, never escalated
    ]
    report = autonomy_report(window, lambda tenant: LIVE, PACK)
    row = next(r for r in report.as_dict()["rows"] if r["trigger"] == "low_confidence")
    assert (row["approved"], row["rejected"], row["edited"]) == (4, 1, 0)
    [candidate] = report.candidates
    assert (candidate.setting, candidate.current, candidate.proposed) == ("min_confidence", 0.9, 0.56)
    assert (candidate.would_allow, candidate.kept_for_humans) == (3, 1)
    assert report.candidate_settings() == {"acme": {"min_confidence": 0.56}}

    widened = {"acme": PACK.settings.with_record({"allow_autonomous": True} | report.candidate_settings()["acme"])}
    proposals = [e.data for e in window if isinstance(e, s.ActionProposed)]
    decisions = [e.data for e in window if isinstance(e, s.ActionDecided)]
    replay = evaluate(PACK, proposals, decisions, tenants=widened, humans=human_outcomes(window))
    assert replay.touches_saved == 3
    assert replay.newly_allowed_rejected == []
    assert replay.kinds() == {"escalate→allow": 3}


def test_a_setting_that_would_let_a_rejected_call_through_is_shown_as_such_in_the_whatif() -> None:
    window = [*_recorded(0.7, "approved"), *_recorded(0.6, "rejected")]
    too_wide = {"acme": PACK.settings.with_record({"allow_autonomous": True, "min_confidence": 0.5})}
    proposals = [e.data for e in window if isinstance(e, s.ActionProposed)]
    decisions = [e.data for e in window if isinstance(e, s.ActionDecided)]
    replay = evaluate(PACK, proposals, decisions, tenants=too_wide, humans=human_outcomes(window))
    assert replay.touches_saved == 1
    assert [f.action_id for f in replay.newly_allowed_rejected] == [proposals[1].action_id]


def test_irreversible_writes_humans_always_approved_suggest_accepting_the_class_and_nothing_widens_on_mixed_answers() -> None:
    def escalated(human: str) -> list[Any]:
        events = _recorded(0.99, human)
        d = events[1].data
        irreversible = s.Reason(code="irreversible_write", policy_id="irreversible-write")
        events[1] = s.ActionDecided.build(d.model_copy(update={"outcome": "escalate", "reasons": [irreversible]}), source="p")
        return events

    approved_only = autonomy_report([*escalated("approved"), *escalated("approved")], lambda tenant: LIVE, PACK)
    assert [(c.setting, c.proposed, c.would_allow) for c in approved_only.candidates] == [("accept_irreversible", ["write_low"], 2)]
    mixed = autonomy_report([*escalated("approved"), *escalated("edited")], lambda tenant: LIVE, PACK)
    assert mixed.candidates == []


def test_writes_with_no_declared_undo_count_toward_the_same_acceptance_as_irreversible_ones() -> None:
    def escalated(code: str) -> list[Any]:
        events = _recorded(0.99, "approved")
        d = events[1].data
        reason = s.Reason(code=code, policy_id=code.replace("_", "-"))
        events[1] = s.ActionDecided.build(d.model_copy(update={"outcome": "escalate", "reasons": [reason]}), source="p")
        return events

    report = autonomy_report([*escalated("irreversible_write"), *escalated("no_rollback_path")], lambda tenant: LIVE, PACK)
    [candidate] = report.candidates
    assert (candidate.setting, candidate.proposed, candidate.would_allow) == ("accept_irreversible", ["write_low"], 2)
    assert candidate.trigger == "irreversible_write, no_rollback_path"


def test_the_report_counts_the_escalations_approvers_called_needless() -> None:
    """Governance probe F1: `should_not_need_approval` given on an unchanged approval is the autonomy signal the report counts."""
    window = [
        *_recorded(0.85, "approved", reason="should_not_need_approval"),
        *_recorded(0.75, "approved"),
        *_recorded(0.62, "rejected"),
    ]
    [row] = [r for r in autonomy_report(window, lambda tenant: LIVE, PACK).as_dict()["rows"] if r["trigger"] == "low_confidence"]
    assert (row["approved"], row["rejected"], row["should_not_need_approval"]) == (2, 1, 1)
