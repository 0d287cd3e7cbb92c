"""The autonomy report counts what its candidate would do as what-if does, and says what it rests on and what else it widens.

Governance probe F2: acme's candidate threshold 500 → 700 "would have allowed 4" approved escalations where what-if on
the same candidate saved 3: the 560 USD refund to a payee paid 480 USD that day still escalates under 700, on the
per-payee daily bound (unset, it follows the threshold). F9: globex's 200 → 480.01 rested on one approval minutes old,
with a request still pending, and said nothing of raising the per-payee daily bound from 200 to 480.01 with it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import schemas as s
from servicekit import REPO_ROOT, ToolCatalog
from services.policy import Call, Controls, History, PackSource, TenantSettings, compile_pack, decide
from tidegate.ops.autonomy import autonomy_report, human_outcomes
from tidegate.ops.whatif import evaluate

PACK = compile_pack(PackSource.from_dir(REPO_ROOT / "policies" / "default"), ToolCatalog.load(REPO_ROOT / "catalog" / "tools"))
PAYEES = [f"cus_100{i}" for i in range(1, 8)]
START = datetime(2026, 12, 1, 9, tzinfo=UTC)


def _settings(tenant: str, threshold: float) -> dict[str, Any]:
    return {"allow_autonomous": True, "refund_threshold_usd": threshold, "known_payees": PAYEES}


def _refund(
    tenant: str, settings: TenantSettings, amount: float, payee: str, paid_payee: float, human: str | None, at: datetime
) -> list[Any]:
    """A refund decided by the policy with what the tenant had paid the payee that day, and a human's answer to it, if any."""
    p = s.ActionProposedData(
        action_id=f"a-{uuid.uuid4().hex[:8]}", task_id=f"t-{uuid.uuid4().hex[:8]}", tenant_id=tenant, step=1,
        tool="issue_refund", args={"payee_id": payee, "amount_usd": amount, "order_id": "O-7001"},
        proposer="external:agent", mode="autonomous", confidence=1.0,
    )  # fmt: skip
    v = decide(PACK, Call.from_proposal(p), History(payee_known=True, paid_payee_usd=paid_payee), Controls(tenant=settings))
    d = s.ActionDecidedData(
        action_id=p.action_id, task_id=p.task_id, tenant_id=tenant, tool=p.tool, args=p.args, action_digest="x",
        outcome=v.outcome, reasons=list(v.reasons), policy_version=PACK.version, risk=v.risk, latency_ms=1, facts=v.facts,
        mode="autonomous",
    )  # fmt: skip
    events: list[Any] = [
        s.ActionProposed.build(p, source="agent").model_copy(update={"time": at}),
        s.ActionDecided.build(d, source="tidegate/policy").model_copy(update={"time": at}),
    ]
    if human is not None:
        data = s.ApprovalData(
            approval_id=f"ap-{p.action_id}", action_id=p.action_id, task_id=p.task_id, tenant_id=tenant, tool=p.tool,
            args=p.args, action_digest="x", approver="sam@example.com",
            review_reason="wrong_amount" if human == "rejected" else None, expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        )  # fmt: skip
        events.append((s.ApprovalRejected if human == "rejected" else s.ApprovalGranted).build(data, source="tidegate/approval"))
    return events


def _acme(minutes: float) -> tuple[list[Any], TenantSettings]:
    """The probe's acme: four refunds over 500 approved unchanged (one to a payee paid 480 that day), 700 rejected."""
    live = PACK.settings.with_record(_settings("acme", 500))
    at = [START + timedelta(minutes=minutes * i) for i in range(6)]
    window = [
        *_refund("acme", live, 480, "cus_1005", 0, None, at[0]),  # allowed: under 500
        *_refund("acme", live, 520, "cus_1001", 0, "approved", at[1]),
        *_refund("acme", live, 540, "cus_1002", 0, "approved", at[2]),
        *_refund("acme", live, 610, "cus_1003", 0, "approved", at[3]),
        *_refund("acme", live, 560, "cus_1005", 480, "approved", at[4]),  # 1,040 to cus_1005 that day
        *_refund("acme", live, 700, "cus_1004", 0, "rejected", at[5]),
    ]
    return window, live


def _whatif(window: list[Any], live: TenantSettings, tenant: str, change: dict[str, Any]) -> Any:
    """`tidegate whatif --tenant-settings` with the candidate: today's pack and settings as the baseline."""
    widened = TenantSettings.model_validate(live.model_dump() | change)
    proposals = [e.data for e in window if isinstance(e, s.ActionProposed)]
    decided = [e.data for e in window if isinstance(e, s.ActionDecided)]
    return evaluate(
        PACK, proposals, decided, tenants={tenant: widened}, live=PACK, live_tenants={tenant: live}, humans=human_outcomes(window)
    )


def test_the_report_and_whatif_give_one_count_for_the_candidate_threshold() -> None:
    window, live = _acme(minutes=10)
    [candidate] = autonomy_report(window, lambda tenant: live, PACK).candidates
    assert (candidate.setting, candidate.current, candidate.proposed) == ("refund_threshold_usd", 500.0, 700.0)
    replayed = _whatif(window, live, "acme", candidate.settings)
    assert (candidate.would_allow, replayed.touches_saved) == (3, 3)  # before: the report said 4
    assert [f.now_reasons for f in replayed.flips] == [["within_threshold"]] * 3


def test_a_candidate_on_a_handful_of_approvals_within_the_hour_says_so_with_the_pending_request() -> None:
    live = PACK.settings.with_record(_settings("globex", 200))
    window = [
        *_refund("globex", live, 480, "cus_1007", 0, "approved", START),
        *_refund("globex", live, 250, "cus_1001", 0, None, START + timedelta(minutes=5)),  # still waiting for a human
    ]
    report = autonomy_report(window, lambda tenant: live, PACK)
    [candidate] = report.candidates
    assert (candidate.current, candidate.proposed, candidate.would_allow) == (200.0, 480.01, 1)
    assert candidate.evidence.as_dict() == {
        "approved": 1,
        "rejected_or_edited": 0,
        "pending": 1,
        "span_hours": 0.0,
        "warning": "too little evidence to widen: 1 approval(s) over 0.0 h (at least 5 over 24 h advised)",
    }
    # The second effect is said: the per-payee daily bound follows the threshold while it is unset.
    assert candidate.payee_bound.startswith("it also raises the per-payee daily bound 200.0 → 480.01")
    assert report.candidate_settings() == {"globex": {"refund_threshold_usd": 480.01}}

    # Asked to keep the bound: it is written at today's figure, and the count says what that leaves (the 480 reaches it).
    [kept] = autonomy_report(window, lambda tenant: live, PACK, keep_payee_bound=True).candidates
    assert kept.settings == {"refund_threshold_usd": 480.01, "payee_daily_threshold_usd": 200.0}
    assert kept.would_allow == _whatif(window, live, "globex", kept.settings).touches_saved == 0
    assert "kept at 200.0" in kept.payee_bound


def test_enough_approvals_over_more_than_a_day_carry_no_warning() -> None:
    window, live = _acme(minutes=8 * 60)  # the six refunds over 40 hours
    window += _refund("acme", live, 530, "cus_1006", 0, "approved", START + timedelta(hours=41))
    [candidate] = autonomy_report(window, lambda tenant: live, PACK).candidates
    assert (candidate.evidence.approved, candidate.evidence.span_hours, candidate.evidence.warning()) == (5, 33.0, None)
