"""The autonomy report proposes a wider daily bound (per payee, or the tenant's) from what humans did with its escalations,
and what-if replays it.

A refund split across tasks escalates `cumulative_threshold` at the piece that makes what the tenant paid the payee over
24 hours reach `payee_daily_threshold_usd` (`cumulative-threshold-payee`); one fanned out across payees escalates
`daily_payout_bound` at the piece that would take what the tenant paid out without a human over `tenant_daily_payout_usd`
(red team F5). When humans approve those unchanged, the tenant can widen the bound; the report proposes the widest one
that lets none of the pieces a human rejected through.
"""

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
LIVED = {"allow_autonomous": True, "refund_threshold_usd": 500, "known_payees": ["cus_1001"]}
LIVE = PACK.settings.with_record(LIVED)


def _piece(amount: float, paid_payee: float, human: str | None, paid_tenant: float = 0.0) -> list[Any]:
    """A refund of `amount` to cus_1001 in a task of its own, after `paid_payee` paid it (and `paid_tenant` paid out without a
    human) that day; its decision; a human's answer."""
    p = s.ActionProposedData(
        action_id=f"a-{uuid.uuid4().hex[:8]}", task_id=f"t-{uuid.uuid4().hex[:8]}", tenant_id="acme", step=1,
        tool="issue_refund", args={"payee_id": "cus_1001", "amount_usd": amount, "order_id": "O-5001"},
        proposer="external:agent", mode="autonomous", confidence=1.0,
    )  # fmt: skip
    history = History(payee_known=True, paid_payee_usd=paid_payee, paid_tenant_usd=paid_tenant)
    v = decide(PACK, Call.from_proposal(p), history, Controls(tenant=LIVE))
    d = s.ActionDecidedData(
        action_id=p.action_id, task_id=p.task_id, tenant_id="acme", tool=p.tool, args=p.args, action_digest="x",
        outcome=v.outcome, reasons=list(v.reasons), policy_version=PACK.version, risk=v.risk, latency_ms=1, facts=v.facts,
        mode="autonomous",
    )  # fmt: skip
    events: list[Any] = [s.ActionProposed.build(p, source="agent"), s.ActionDecided.build(d, source="tidegate/policy")]
    if human is not None:
        data = s.ApprovalData(
            approval_id=f"ap-{p.action_id}", action_id=p.action_id, task_id=p.task_id, tenant_id="acme", tool=p.tool,
            args=p.args, action_digest="x", approver="bob@acme.example",
            review_reason="wrong_recipient" if human == "rejected" else None, expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        )  # fmt: skip
        events.append((s.ApprovalRejected if human == "rejected" else s.ApprovalGranted).build(data, source="tidegate/approval"))
    return events


def test_approved_payee_escalations_propose_a_wider_daily_bound_that_keeps_the_rejected_one() -> None:
    window = [
        *_piece(300, 300, "approved"),  # 600 that day
        *_piece(300, 450, "approved"),  # 750
        *_piece(400, 600, "rejected"),  # 1,000: a human said no
        *_piece(300, 900, "approved"),  # 1,200, beyond the rejected total: still a human's
    ]
    decided = [e.data for e in window if isinstance(e, s.ActionDecided)]
    assert {(d.outcome, r.policy_id) for d in decided for r in d.reasons} == {("escalate", "cumulative-threshold-payee")}

    report = autonomy_report(window, lambda tenant: LIVE, PACK)
    row = next(r for r in report.as_dict()["rows"] if r["trigger"] == "cumulative_threshold")
    assert (row["approved"], row["rejected"]) == (3, 1)
    [candidate] = report.candidates
    assert (candidate.setting, candidate.current, candidate.proposed, candidate.trigger) == (
        "payee_daily_threshold_usd",
        500.0,
        1000.0,
        "cumulative_threshold",
    )
    assert (candidate.would_allow, candidate.kept_for_humans) == (2, 1)  # the 1,200 approved stays a human's too

    widened = {"acme": PACK.settings.with_record(LIVED | report.candidate_settings()["acme"])}
    proposals = [e.data for e in window if isinstance(e, s.ActionProposed)]
    replay = evaluate(PACK, proposals, decided, tenants=widened, humans=human_outcomes(window))
    assert (replay.touches_saved, replay.newly_allowed_rejected) == (2, [])


def test_a_tenant_that_turned_the_bound_off_gets_no_candidate_for_it() -> None:
    off = PACK.settings.with_record(LIVED | {"payee_daily_threshold_usd": "off"})
    window = [*_piece(300, 300, "approved"), *_piece(300, 450, "approved")]
    assert autonomy_report(window, lambda tenant: off, PACK).candidates == []


def test_approved_daily_payout_escalations_propose_a_wider_bound_that_keeps_the_rejected_one() -> None:
    window = [
        *_piece(300, 0, "approved", paid_tenant=900),  # 1,200 that day without a human
        *_piece(400, 0, "approved", paid_tenant=1000),  # 1,400
        *_piece(400, 0, "rejected", paid_tenant=1600),  # 2,000: a human said no
        *_piece(300, 0, "approved", paid_tenant=2100),  # 2,400, beyond the rejected total: still a human's
    ]
    decided = [e.data for e in window if isinstance(e, s.ActionDecided)]
    assert {(d.outcome, r.policy_id) for d in decided for r in d.reasons} == {("escalate", "daily-payout-bound")}

    report = autonomy_report(window, lambda tenant: LIVE, PACK)
    row = next(r for r in report.as_dict()["rows"] if r["trigger"] == "daily_payout_bound")
    assert (row["approved"], row["rejected"]) == (3, 1)
    [candidate] = report.candidates
    assert (candidate.setting, candidate.current, candidate.proposed, candidate.trigger) == (
        "tenant_daily_payout_usd",
        1000.0,
        1999.99,
        "daily_payout_bound",
    )
    assert (candidate.would_allow, candidate.kept_for_humans) == (2, 1)

    widened = {"acme": PACK.settings.with_record(LIVED | report.candidate_settings()["acme"])}
    proposals = [e.data for e in window if isinstance(e, s.ActionProposed)]
    replay = evaluate(PACK, proposals, decided, tenants=widened, humans=human_outcomes(window))
    assert (replay.touches_saved, replay.newly_allowed_rejected) == (2, [])


def test_a_tenant_that_turned_its_daily_payout_bound_off_gets_no_candidate_for_it() -> None:
    off = PACK.settings.with_record(LIVED | {"tenant_daily_payout_usd": "off"})
    window = [*_piece(300, 0, "approved", paid_tenant=900), *_piece(400, 0, "approved", paid_tenant=1000)]
    assert autonomy_report(window, lambda tenant: off, PACK).candidates == []
