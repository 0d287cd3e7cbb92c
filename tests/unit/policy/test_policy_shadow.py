"""Shadow policies: evaluated on live traffic and recorded (decision facts, metrics, explain) without changing any outcome."""

from __future__ import annotations

from prometheus_client import REGISTRY

from schemas import ActionDecided
from servicekit import REPO_ROOT, ToolCatalog
from servicekit.metrics import observe_published
from services.policy.engine import Controls, decide
from services.policy.facts import Call, History
from services.policy.pack import PackSource, compile_pack
from services.policy.tenant_settings import TenantSettings

CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
LIVE = PackSource.from_dir(REPO_ROOT / "policies" / "default")
SHADOW = """
// Candidate: refunds of 100 USD or more need a human (today: 500 for acme).
@id("candidate-refund-100")
@mode("shadow")
@outcome("escalate")
@reason("needs_human_approval")
permit (principal, action in Action::"financial", resource)
when { context.facts.amount_cents >= 10000 }
unless { context.approval.granted };

// Candidate: never tag anything (a shadow forbid must not hide the live permits).
@id("candidate-no-tags")
@mode("shadow")
@outcome("deny")
@reason("human_only")
forbid (principal, action == Action::"tag_ticket", resource);
"""
TENANT = Controls(tenant=TenantSettings(allow_autonomous=True, known_payees=["cus_1001"], refund_threshold_usd=500))
CALLS = [
    Call("acme", "t", "issue_refund", {"payee_id": "cus_1001", "amount_usd": amount, "order_id": "O-1"}, "a", mode="autonomous")
    for amount in (20.0, 150.0, 600.0, 100.0)
] + [
    Call("acme", "t", "tag_ticket", {"ticket_id": "T-1", "tags": ["x"]}, "a", mode="autonomous"),
    Call("acme", "t", "send_reply", {"ticket_id": "T-1", "to": "x@example.com", "body": "b"}, "a", mode="autonomous"),
]


def test_a_shadow_policy_changes_no_outcome_and_is_reported() -> None:
    live = compile_pack(LIVE, CATALOG)
    candidate = compile_pack(PackSource(files=LIVE.files | {"zz_shadow.cedar": SHADOW}, settings=LIVE.settings), CATALOG)
    flips = []
    for call in CALLS:
        before, after = decide(live, call, History(), TENANT), decide(candidate, call, History(), TENANT)
        assert (after.outcome, after.codes) == (before.outcome, before.codes), call
        shadow = after.facts["shadow"]
        if shadow["flipped"]:
            flips.append((call.tool, call.args.get("amount_usd"), shadow["outcome"], shadow["fired"]))
    assert flips == [
        ("issue_refund", 150.0, "escalate", ["candidate-refund-100"]),
        ("issue_refund", 100.0, "escalate", ["candidate-refund-100"]),
        ("tag_ticket", None, "deny", ["candidate-no-tags"]),
    ]
    assert "shadow" not in decide(live, CALLS[0], History(), TENANT).facts  # a pack without shadow policies records nothing


def test_a_shadow_decision_is_counted_in_metrics() -> None:
    candidate = compile_pack(PackSource(files=LIVE.files | {"zz_shadow.cedar": SHADOW}, settings=LIVE.settings), CATALOG)
    verdict = decide(candidate, CALLS[1], History(), TENANT)
    labels = {"tenant": "acme", "tool": "issue_refund", "outcome": "allow", "shadow_outcome": "escalate", "flipped": "true"}
    before = REGISTRY.get_sample_value("tidegate_policy_shadow_total", labels) or 0.0
    event = ActionDecided.model_validate(
        {
            "source": "tidegate/policy",
            "subject": "t",
            "tenantid": "acme",
            "data": {
                "action_id": "a-1",
                "task_id": "t",
                "tenant_id": "acme",
                "tool": "issue_refund",
                "args": CALLS[1].args,
                "outcome": verdict.outcome,
                "reasons": [r.model_dump() for r in verdict.reasons],
                "policy_version": verdict.policy_version,
                "facts": verdict.facts,
                "latency_ms": 0.1,
                "action_digest": "x",
            },
        }
    )
    observe_published("policy", event)
    assert REGISTRY.get_sample_value("tidegate_policy_shadow_total", labels) == before + 1


def test_whatif_reports_the_shadow_flips_and_the_human_load_a_candidate_would_create() -> None:
    from schemas import ActionDecidedData, ActionProposedData
    from tidegate.ops.whatif import evaluate

    live = compile_pack(LIVE, CATALOG)
    shadowed = compile_pack(PackSource(files=LIVE.files | {"zz_shadow.cedar": SHADOW}, settings=LIVE.settings), CATALOG)
    enforced = compile_pack(
        PackSource(files=LIVE.files | {"zz_candidate.cedar": SHADOW.replace('@mode("shadow")\n', "")}, settings=LIVE.settings), CATALOG
    )
    tenants = {"acme": TENANT.tenant}
    proposals, decisions = [], []
    for i, call in enumerate(CALLS):
        p = ActionProposedData(
            action_id=f"a-{i}", task_id="t", tenant_id="acme", step=i, tool=call.tool, args=call.args, proposer="a", mode="autonomous"
        )
        v = decide(live, call, History(), TENANT)
        proposals.append(p)
        decisions.append(
            ActionDecidedData(
                action_id=p.action_id,
                task_id="t",
                tenant_id="acme",
                tool=call.tool,
                args=call.args,
                outcome=v.outcome,
                reasons=list(v.reasons),
                policy_version=v.policy_version,
                facts=v.facts,
                latency_ms=0.1,
                action_digest="x",
            )
        )
    as_shadow = evaluate(shadowed, proposals, decisions, tenants=tenants, days=2.0)
    assert (len(as_shadow.flips), as_shadow.shadow_flips) == (0, 3)
    as_enforced = evaluate(enforced, proposals, decisions, tenants=tenants, days=2.0)
    assert sorted(f.kind for f in as_enforced.flips) == ["allow→deny", "allow→escalate", "allow→escalate"]
    assert as_enforced.human_load() == {"then": 1.0, "now": 2.0}  # 2 escalations (600 USD, external send) → 4, over 2 days


def test_whatif_decides_with_what_the_task_had_read_and_done_as_recorded() -> None:
    from schemas import ActionDecidedData, ActionProposedData
    from tidegate.ops.whatif import evaluate

    live = compile_pack(LIVE, CATALOG)
    args = {"ticket_id": "T-1", "to": "x@example.com", "body": "b"}
    p = ActionProposedData(
        action_id="a-1", task_id="t", tenant_id="acme", step=3, tool="send_reply", args=args, proposer="a", mode="autonomous"
    )
    flow = {"untrusted_read": True, "calls": 3, "tool_calls": 2, "tools_called": ["get_ticket", "send_reply"], "external_sends": 1}
    taint = [{"arg": "to", "value": "email:x@example.com", "source": "the result of get_ticket (action a-0)"}]
    recorded = ActionDecidedData(
        action_id="a-1",
        task_id="t",
        tenant_id="acme",
        tool="send_reply",
        args=args,
        outcome="escalate",
        reasons=[],
        policy_version="sha256:x",
        facts={"payee_is_new": False, "flow": flow | {"sent_amount_cents": 0, "last_decision": "allow"}, "taint": taint},
        latency_ms=0.1,
        action_digest="x",
    )
    allow_all = TenantSettings(allow_autonomous=True, triggers={"external_recipient": {"action": "allow"}})
    report = evaluate(live, [p], [recorded], tenants={"acme": allow_all})
    assert (report.unchanged, len(report.flips)) == (1, 0)  # still escalated: tainted recipient, send after an untrusted read
