"""What-if compares a candidate with today's pack and settings deciding the same record again, never on invented facts.

Governance probe F7: after acme's refund threshold was raised to 700 and rolled back to 500, `tidegate whatif --policy
policies/default` (the very pack the services run) reported the 550 USD refund allowed under 700 as a flip of the
candidate. F6: a refund denied `tenant_not_onboarded` before any facts were computed was predicted `escalate` on
"payee known, nothing paid" where the live policy, once the tenant was onboarded, denied it `new_payee_blocked`.
F3: 7 escalations in one hour read "168 escalations/day recorded", with no word of the hour.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import schemas as s
from servicekit import REPO_ROOT, ToolCatalog
from services.policy import Call, Controls, History, PackSource, TenantSettings, compile_pack, decide
from tidegate.ops.whatif import WhatIfReport, evaluate

PACK = compile_pack(PackSource.from_dir(REPO_ROOT / "policies" / "default"), ToolCatalog.load(REPO_ROOT / "catalog" / "tools"))
ACME = {"allow_autonomous": True, "known_payees": ["cus_1001", "cus_1002"]}


def _settings(**change: Any) -> TenantSettings:
    return PACK.settings.with_record(ACME | change)


def _refund(amount: float, tenant: str = "acme", payee: str = "cus_1001") -> s.ActionProposedData:
    return s.ActionProposedData(
        action_id=f"a-{uuid.uuid4().hex[:8]}", task_id=f"t-{uuid.uuid4().hex[:8]}", tenant_id=tenant, step=1,
        tool="issue_refund", args={"payee_id": payee, "amount_usd": amount, "order_id": "O-7001"},
        proposer="external:agent", mode="autonomous", confidence=1.0,
    )  # fmt: skip


def _decided_live(p: s.ActionProposedData, settings: TenantSettings | None, history: History) -> s.ActionDecidedData:
    """The decision the policy service recorded, made with the settings in force then."""
    v = decide(PACK, Call.from_proposal(p), history, Controls(tenant=settings))
    return s.ActionDecidedData(
        action_id=p.action_id, task_id=p.task_id, tenant_id=p.tenant_id, tool=p.tool, args=p.args, action_digest="x",
        outcome=v.outcome, reasons=list(v.reasons), policy_version=PACK.version, risk=v.risk, latency_ms=1, facts=v.facts,
        mode="autonomous",
    )  # fmt: skip


def test_the_running_pack_flips_nothing_after_a_widening_and_its_rollback_and_the_drift_is_said_apart() -> None:
    widened = _refund(550)  # allowed while acme's threshold was 700
    before = _refund(650)  # escalated under 500, before the widening
    small = _refund(40)
    proposals = [widened, before, small]
    decisions = [
        _decided_live(widened, _settings(refund_threshold_usd=700), History(payee_known=True)),
        _decided_live(before, _settings(refund_threshold_usd=500), History(payee_known=True)),
        _decided_live(small, _settings(refund_threshold_usd=500), History(payee_known=True)),
    ]
    assert [d.outcome for d in decisions] == ["allow", "escalate", "allow"]
    today = {"acme": _settings(refund_threshold_usd=500)}  # rolled back

    same_pack = evaluate(PACK, proposals, decisions, tenants=today, live=PACK, live_tenants=today)
    assert same_pack.flips == []  # the docs' promise: the pack the services run flips nothing
    assert [(f.action_id, f.kind, f.now_reasons) for f in same_pack.drifted] == [
        (widened.action_id, "allow→escalate", ["needs_human_approval"])
    ]
    assert same_pack.as_dict()["drifted"] == 1

    # A candidate threshold of 600 over today's 500: its flip is the 550, measured against today's escalation of it.
    candidate = {"acme": _settings(refund_threshold_usd=600)}
    widening = evaluate(PACK, proposals, decisions, tenants=candidate, live=PACK, live_tenants=today)
    assert [(f.action_id, f.kind) for f in widening.flips] == [(widened.action_id, "escalate→allow")]
    assert widening.escalations() == {"then": 1, "baseline": 2, "now": 1}


def test_a_denial_recorded_before_any_facts_is_not_decidable_rather_than_decided_on_a_known_payee() -> None:
    """The security reviewer onboarding `umbrella`: what-if must not predict an approvable escalation for an attacker's payee."""
    attack = _refund(450, tenant="umbrella", payee="attacker_payout_99")
    recorded = _decided_live(attack, None, History())  # umbrella not onboarded: denied before its facts
    assert (recorded.outcome, [str(r.code) for r in recorded.reasons]) == ("deny", ["tenant_not_onboarded"])
    onboarded = {"umbrella": PACK.settings.with_record({"allow_autonomous": True, "refund_threshold_usd": 500})}

    report = evaluate(PACK, [attack], [recorded], tenants=onboarded, live=PACK, live_tenants={})
    assert report.flips == []  # before: deny→escalate ['tainted_argument'] / deny→allow on "payee known, nothing paid"
    assert report.now_outcomes == Counter()
    assert report.skipped.counts == {"not_decidable": 1}
    assert attack.action_id in report.skipped.examples[0]

    # A denial whose answer needs no facts (the tenant is still not onboarded) stays decidable: unchanged.
    still_out = evaluate(PACK, [attack], [recorded], tenants={}, live=PACK, live_tenants={})
    assert (still_out.unchanged, still_out.skipped.counts) == (1, {})


def test_the_human_load_gives_the_counts_and_the_span_before_any_daily_rate() -> None:
    report = WhatIfReport(candidate_version="sha256:x", days=1 / 24)
    report.then_outcomes["escalate"], report.baseline_outcomes["escalate"], report.now_outcomes["escalate"] = 7, 7, 4
    assert report.load_line() == "7 escalations in 1.0 h recorded → 4 under the candidate; ~168/day → ~96/day at that rate"
    assert report.as_dict()["escalations"] == {"then": 7, "baseline": 7, "now": 4}
    assert report.as_dict()["span_hours"] == 1.0

    short = WhatIfReport(candidate_version="sha256:x", days=0.25 / 24, redecided=True)
    short.then_outcomes["escalate"], short.baseline_outcomes["escalate"], short.now_outcomes["escalate"] = 3, 2, 2
    assert short.load_line() == (
        "3 escalations in 0.2 h recorded (2 decided again with today's pack and settings) → 2 under the candidate; "
        "under an hour of proposals: no daily rate"
    )
    assert short.human_load() == {"then": None, "now": None}
