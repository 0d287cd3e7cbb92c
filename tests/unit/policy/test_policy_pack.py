"""The default policy pack's table (every rule, both sides of each threshold), pack validation, and fail-closed evaluation."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import cedarpy
import pytest

from servicekit import REPO_ROOT, ToolCatalog
from services.policy.cedar_schema import cedar_schema
from services.policy.engine import Controls, decide, still_holds
from services.policy.facts import Call, History
from services.policy.pack import REMEMBERED, CompiledPack, PackError, PackSource, compile_pack, validate_pack
from services.policy.packtest import PolicyCase, load_cases, run_case, run_cases
from services.policy.tenant_settings import TenantSettings

PACK_DIR = REPO_ROOT / "policies" / "default"
CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
PACK = compile_pack(PackSource.from_dir(PACK_DIR), CATALOG)
CASES = load_cases(PACK_DIR)
HEADER = '@id("r") @outcome("allow") @reason("read_allowed")\n'
ONBOARDED = Controls(tenant=TenantSettings())  # a tenant onboarded by a `control.tenant` record with default settings


@pytest.mark.parametrize("case", CASES, ids=[f"{c.source} {c.name}" for c in CASES])
def test_default_pack_case(case: PolicyCase) -> None:
    result = run_case(PACK, case)
    assert result.passed, result.describe()


def test_every_rule_of_the_pack_decides_some_case() -> None:
    fired = {r.policy_id for res in run_cases(PACK, CASES) for r in res.verdict.reasons}
    assert set(PACK.rules) <= fired, f"rules no case exercises: {sorted(set(PACK.rules) - fired)}"
    assert {"builtin:unknown-tool", "builtin:args-schema", "builtin:budget-task", "builtin:budget-tenant"} <= fired
    assert any(f.startswith("builtin:killswitch:") for f in fired)


def test_a_wrong_expectation_fails() -> None:
    case = CASES[0].model_copy(update={"expect": CASES[0].expect.model_copy(update={"outcome": "deny"})})
    assert not run_case(PACK, case).passed
    absent = CASES[0].model_copy(update={"expect": CASES[0].expect.model_copy(update={"absent": [CASES[0].expect.reason]})})
    assert not run_case(PACK, absent).passed


def test_version_is_a_hash_of_files_and_settings() -> None:
    source = PackSource.from_dir(PACK_DIR)
    assert source.version == PACK.version
    assert source.version.startswith("sha256:")
    changed = PackSource(files=source.files, settings=source.settings | {"sensitive_paths": ["x/*"]})
    assert changed.version != source.version


def test_schema_groups_every_tool_under_its_risk_class() -> None:
    actions = cedar_schema(CATALOG)[""]["actions"]
    for name, spec in CATALOG.items():
        assert actions[name]["memberOf"] == [{"id": spec.risk.value}]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("permit(principal, action, resource);", "needs @id"),
        ('@id("a") @outcome("maybe") @reason("read_allowed") permit(principal, action, resource);', "@outcome must be"),
        ('@id("a") @outcome("allow") @reason("because") permit(principal, action, resource);', "not a reason code"),
        ('@id("a") @outcome("escalate") @reason("human_only") forbid(principal, action, resource);', "forbid policy can only"),
        (HEADER + 'permit(principal, action, resource) when { context.facts.amount_cents == "x" };', "policy 'r'"),
        (HEADER + 'permit(principal, action == Action::"wire_money", resource);', "policy 'r'"),
        (HEADER + "permit(principal, action, resource) when { context.nope };", "policy 'r'"),
        (HEADER + "permit(principal, action, resource);\n" + HEADER + "permit(principal, action, resource);", "used twice"),
        ("permit(principal, action, resource) when {", "does not parse"),
    ],
)
def test_validation_names_the_problem(text: str, problem: str) -> None:
    problems = validate_pack(PackSource(files={"p.cedar": text}, settings={}), CATALOG)
    assert any(problem in p for p in problems), problems
    with pytest.raises(PackError):
        compile_pack(PackSource(files={"p.cedar": text}, settings={}), CATALOG)


def test_bad_settings_are_refused() -> None:
    source = PackSource(
        files={"p.cedar": HEADER + "permit(principal, action, resource);"}, settings={"tenants": {"acme": {"refund_threshold": 5}}}
    )
    assert any("settings.yaml" in p for p in validate_pack(source, CATALOG))


def test_an_evaluation_error_denies_with_policy_error() -> None:
    # Valid against the schema, but overflows at run time: the call is denied, never crashes, never allowed.
    text = (
        HEADER
        + "permit(principal, action, resource);\n"
        + (
            '@id("overflow") @outcome("escalate") @reason("needs_human_approval")\n'
            "permit(principal, action, resource) when { context.facts.amount_cents * 1000000000000 > 0 };"
        )
    )
    pack = compile_pack(PackSource(files={"p.cedar": text}, settings={}), CATALOG)
    call = Call("acme", "t", "issue_refund", {"payee_id": "cus_1", "amount_usd": 99999.0, "order_id": "O-1"}, "me", mode="autonomous")
    verdict = decide(pack, call, History(), ONBOARDED)
    assert verdict.outcome == "deny"
    assert verdict.codes == ["policy_error"]
    assert "overflow" in verdict.reasons[0].message
    small = Call("acme", "t", "get_ticket", {"ticket_id": "T-1"}, "me")
    assert decide(pack, small, History(), ONBOARDED).outcome == "allow"


def test_nothing_permitted_is_denied_no_permit() -> None:
    pack = compile_pack(
        PackSource(files={"p.cedar": HEADER + 'permit(principal, action in Action::"read", resource);'}, settings={}), CATALOG
    )
    verdict = decide(pack, Call("acme", "t", "tag_ticket", {"ticket_id": "T-1", "tags": ["x"]}, "me"), History(), ONBOARDED)
    assert (verdict.outcome, verdict.codes) == ("deny", ["no_permit"])


def test_load_cases_rejects_a_malformed_case(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "bad.yaml").write_text("- name: x\n  tool: get_ticket\n  expect: {outcome: perhaps}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml case 1"):
        load_cases(tmp_path)


# --- still_holds: when a decision taken on a snapshot of the history may be kept -------------------------------

REFUND_CALL = Call(
    "acme", "t-1", "issue_refund", {"payee_id": "cus_1001", "amount_usd": 40.0, "order_id": "O-1"}, "agent", mode="autonomous"
)


def _pack(extra_policy: str = "") -> CompiledPack:
    source = PackSource.from_dir(REPO_ROOT / "policies" / "default")
    files = dict(source.files) | ({"extra.cedar": extra_policy} if extra_policy else {})
    return compile_pack(PackSource(files=files, settings=source.settings), CATALOG)


def test_a_decision_holds_when_only_spend_moved_and_nothing_reads_it() -> None:
    pack = _pack()
    assert not pack.reads_spend
    seen, now = History(payee_known=True, spend_tenant_usd=1.0), History(payee_known=True, spend_tenant_usd=3.0)
    assert decide(pack, REFUND_CALL, seen, Controls()).outcome == decide(pack, REFUND_CALL, now, Controls()).outcome == "allow"
    assert still_holds(pack, REFUND_CALL, Controls(), seen, now)


def test_a_decision_is_taken_again_when_the_payee_became_known() -> None:
    pack = _pack()
    assert not still_holds(pack, REFUND_CALL, Controls(), History(payee_known=False), History(payee_known=True))


def test_a_decision_is_taken_again_near_the_budget() -> None:
    pack = _pack()  # acme's budget is 50 USD
    seen, now = History(spend_tenant_usd=10.0), History(spend_tenant_usd=49.999)
    assert decide(pack, REFUND_CALL, now, Controls()).outcome == "deny"
    assert not still_holds(pack, REFUND_CALL, Controls(), seen, now)
    assert not still_holds(
        pack, REFUND_CALL, Controls(tenant_budget_usd=1.0), History(spend_tenant_usd=0.0), History(spend_tenant_usd=0.995)
    )
    assert still_holds(pack, REFUND_CALL, Controls(tenant_budget_usd=1.0), History(spend_tenant_usd=0.0), History(spend_tenant_usd=0.5))


def test_a_pack_that_reads_spend_takes_every_moved_decision_again() -> None:
    pack = _pack(
        '@id("big-spender") @outcome("escalate") @reason("needs_human_approval")\n'
        "permit (principal, action, resource) when { context.facts.spend_tenant_cents > 200 };"
    )
    assert pack.reads_spend
    assert not still_holds(pack, REFUND_CALL, Controls(), History(spend_tenant_usd=1.0), History(spend_tenant_usd=3.0))
    assert still_holds(pack, REFUND_CALL, Controls(), History(spend_tenant_usd=1.0), History(spend_tenant_usd=1.0))


# --- Cedar's answers, remembered per pack: the same decisions, fewer evaluations ------------------------------------


class CedarCalls:
    """Counts Cedar evaluations (`cedarpy.is_authorized`), passing each through."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = cedarpy.is_authorized

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(cedarpy, "is_authorized", counted)


def _verdicts(pack: CompiledPack) -> list[tuple[Any, ...]]:
    return [(r.verdict.outcome, r.verdict.reasons, r.verdict.facts) for r in run_cases(pack, CASES)]


def test_a_remembered_answer_decides_exactly_as_cedar_does(monkeypatch: pytest.MonkeyPatch) -> None:
    cedar = CedarCalls(monkeypatch)
    pack = _pack()
    first = _verdicts(pack)
    asked = cedar.count
    assert asked > 0
    assert _verdicts(pack) == first  # every case again: outcomes, reasons and facts as Cedar gave them
    assert cedar.count == asked  # ... without evaluating anything again
    assert _verdicts(_pack()) == first
    assert cedar.count == 2 * asked


def test_spend_that_no_policy_reads_costs_no_evaluation_and_spend_a_policy_reads_is_evaluated(monkeypatch: pytest.MonkeyPatch) -> None:
    cedar = CedarCalls(monkeypatch)
    pack = _pack()
    assert not pack.reads_spend
    for spent in (1.0, 3.0, 7.5):
        assert decide(pack, REFUND_CALL, History(payee_known=True, spend_tenant_usd=spent), Controls()).outcome == "allow"
    assert cedar.count == 1
    reads = _pack(
        '@id("big-spender") @outcome("escalate") @reason("needs_human_approval")\n'
        "permit (principal, action, resource) when { context.facts.spend_tenant_cents > 200 };"
    )
    outcomes = [decide(reads, REFUND_CALL, History(payee_known=True, spend_tenant_usd=s), Controls()).outcome for s in (1.0, 3.0, 1.0)]
    assert outcomes == ["allow", "escalate", "allow"]
    assert cedar.count == 1 + 2  # the third is the first again


def test_a_pack_remembers_a_bounded_number_of_answers_forgetting_the_oldest_first() -> None:
    pack = _pack()
    for i in range(REMEMBERED + 10):
        assert pack.remembered(("k", i), functools.partial(int, 2 * i)) == 2 * i
    assert pack.remembered(("k", REMEMBERED + 9), lambda: -1) == 2 * (REMEMBERED + 9)  # still known
    assert pack.remembered(("k", 0), lambda: -1) == -1  # forgotten, computed again
    copy = dataclasses.replace(pack, settings=pack.settings)
    assert copy.remembered(("k", REMEMBERED + 9), lambda: -1) == -1  # a copy starts with no answers


# --- policy slicing: a tenant's requests see only the policies that can apply to it ------------------------------

PER_TENANT = """
@id("acme-big") @outcome("escalate") @reason("needs_human_approval")
permit (principal, action in Action::"financial", resource) when { context.tenant == "acme" && context.facts.amount_cents >= 2000 };

@id("globex-any") @outcome("deny") @reason("human_only")
forbid (principal, action in Action::"financial", resource) when { "globex" == context.tenant };

@id("initech-scope") @outcome("deny") @reason("human_only")
forbid (principal, action, resource == Tenant::"initech");

@id("overflow-first") @outcome("escalate") @reason("needs_human_approval")
permit (principal, action == Action::"tag_ticket", resource)
when { (context.facts.amount_cents + 1) * 9223372036854775807 * 2 > 0 && context.tenant == "nobody" };
"""


def test_policies_bound_to_a_tenant_are_sliced_away_for_the_others_and_decisions_do_not_change() -> None:
    pack = _pack(PER_TENANT)
    bound = {pack.policies[pid]["annotations"]["id"]: tenant for pid, tenant in pack.tenant_bound.items()}
    assert bound == {"acme-big": "acme", "globex-any": "globex", "initech-scope": "initech"}  # not `overflow-first`
    unsliced = dataclasses.replace(pack, tenant_bound={}, _slices={})
    for tenant in ("acme", "globex", "initech", "umbrella"):
        for amount in (0.0, 15.0, 40.0, 900.0):
            for tool, args in (
                ("issue_refund", {"payee_id": "cus_1001", "amount_usd": amount, "order_id": "O-1"}),
                ("tag_ticket", {"ticket_id": "T-1", "tags": ["x"]}),
            ):
                call = Call(tenant, "t-1", tool, args, "agent", mode="autonomous")
                history = History(payee_known=True)
                sliced, whole = decide(pack, call, history, ONBOARDED), decide(unsliced, call, history, ONBOARDED)
                assert (sliced.outcome, sliced.codes) == (whole.outcome, whole.codes), (tenant, tool, amount)
    # The policy whose tenant test is not evaluated first still fails closed for every tenant (Cedar: overflow).
    tag = Call("umbrella", "t-1", "tag_ticket", {"ticket_id": "T-1", "tags": ["x"]}, "agent", mode="autonomous")
    assert decide(pack, tag, History(), ONBOARDED).codes[0] == "policy_error"
    refund = Call(
        "acme", "t-1", "issue_refund", {"payee_id": "cus_1001", "amount_usd": 40.0, "order_id": "O-1"}, "agent", mode="autonomous"
    )
    assert decide(pack, refund, History(payee_known=True), ONBOARDED).outcome == "escalate"  # acme's own rule still applies


def test_a_pack_without_tenant_bound_policies_is_not_sliced() -> None:
    pack = _pack()
    assert pack.tenant_bound == {}
    assert pack.policy_set_for("acme") is pack.policy_set


def test_a_grant_is_counted_against_the_packs_quorum_for_the_risk_class() -> None:
    text = HEADER + "permit(principal, action, resource);"
    settings: dict[str, Any] = {"tenants": {"acme": {"required_approvals": {"financial": 2}}, "globex": {}}}  # both onboarded
    pack = compile_pack(PackSource(files={"p.cedar": text}, settings=settings), CATALOG)
    refund = Call("acme", "t", "issue_refund", {"payee_id": "cus_1", "amount_usd": 10.0, "order_id": "O-1"}, "me", mode="autonomous")

    def granted(names: frozenset[str], call: Call = refund) -> tuple[str, list[str]]:
        approvers = {name: ("finance",) for name in names}
        verdict = decide(pack, call, History(), Controls(), approval_granted=True, approvers=approvers)
        return verdict.outcome, verdict.codes

    assert granted(frozenset({"bob"})) == ("deny", ["approval_quorum_not_met"])
    assert granted(frozenset()) == ("deny", ["approval_quorum_not_met"])
    assert granted(frozenset({"bob", "carol"}))[0] == "allow"
    assert (
        granted(frozenset({"bob"}), Call("acme", "t", "tag_ticket", {"ticket_id": "T-1", "tags": ["x"]}, "me"))[0] == "allow"
    )  # 1 by default
    assert granted(frozenset({"bob"}), dataclasses.replace(refund, tenant_id="globex"))[0] == "allow"  # another tenant's settings


def test_only_approvers_in_the_groups_the_tenant_requires_count_toward_a_grant() -> None:
    text = HEADER + "permit(principal, action, resource);"
    groups = {"financial": ["finance", "finance-leads"]}
    settings: dict[str, Any] = {"tenants": {"acme": {"required_approvals": {"financial": 2}, "approver_groups": groups}}}
    pack = compile_pack(PackSource(files={"p.cedar": text}, settings=settings), CATALOG)
    refund = Call("acme", "t", "issue_refund", {"payee_id": "cus_1", "amount_usd": 10.0, "order_id": "O-1"}, "me", mode="autonomous")

    def granted(approvers: dict[str, tuple[str, ...]]) -> tuple[str, list[str]]:
        verdict = decide(pack, refund, History(), Controls(), approval_granted=True, approvers=approvers)
        return verdict.outcome, verdict.codes

    assert granted({"bob": ("finance",), "lee": ("finance-leads", "support")})[0] == "allow"
    # two approvers, but one of them is in a group the tenant does not require for money: short of the quorum
    assert granted({"bob": ("finance",), "mallory": ("support",)}) == ("deny", ["approval_quorum_not_met"])
    assert granted({"mallory": ("support",), "eve": ("interns",)}) == ("deny", ["approval_quorum_not_met"])
    assert granted({"bob": ("finance",), "carol": ()}) == ("deny", ["approval_quorum_not_met"])  # groups not shown: not counted
    verdict = decide(pack, refund, History(), Controls(), approval_granted=True, approvers={"m": ("support",), "e": ("x",)})
    assert "in finance, finance-leads; the grant has 0 of them among 2" in verdict.reasons[0].message


def test_a_grant_needs_the_quorum_of_the_class_or_of_the_calls_trigger_whichever_is_more() -> None:
    new_payee_by_two = TenantSettings(triggers={"new_payee": {"action": "escalate", "approvers": 2}}, allow_autonomous=True)  # type: ignore[arg-type]
    refund = Call("acme", "t", "issue_refund", {"payee_id": "cus_new", "amount_usd": 10.0, "order_id": "O-1"}, "me", mode="autonomous")
    asked = decide(PACK, refund, History(), Controls(tenant=new_payee_by_two))
    assert (asked.outcome, asked.codes, asked.facts["approvers_required"]) == ("escalate", ["new_payee_review"], 2)

    def granted(tenant: TenantSettings, call: Call, *names: str) -> str:
        approvers = {name: ("finance",) for name in names}
        return decide(PACK, call, History(), Controls(tenant=tenant), approval_granted=True, approvers=approvers).outcome

    assert granted(new_payee_by_two, refund, "bob") == "deny"  # the class needs 1, the trigger 2
    assert granted(new_payee_by_two, refund, "bob", "carol") == "allow"
    known = dataclasses.replace(refund, args=refund.args | {"payee_id": "cus_old"})
    paid_before = new_payee_by_two.model_copy(update={"known_payees": ["cus_old"]})
    assert granted(paid_before, known, "bob") == "allow"  # no trigger fired: the class's 1 is enough
    by_three = paid_before.model_copy(update={"required_approvals": {"financial": 3}})
    assert granted(by_three, refund, "bob", "carol") == "deny"  # the class asks more than the trigger
    assert granted(by_three, refund, "bob", "carol", "dan") == "allow"


def test_a_quorum_names_only_risk_classes() -> None:
    source = PackSource(
        files={"p.cedar": HEADER + "permit(principal, action, resource);"},
        settings={"tenants": {"acme": {"required_approvals": {"finacial": 2}}}},
    )
    assert any("finacial" in p for p in validate_pack(source, CATALOG))


def test_a_tenant_chooses_per_class_between_deny_and_escalate_with_n_approvers() -> None:
    refund = Call("acme", "t", "issue_refund", {"payee_id": "cus_old", "amount_usd": 900.0, "order_id": "O-1"}, "me", mode="autonomous")
    base = {"allow_autonomous": True, "known_payees": ["cus_old"]}
    by_two = TenantSettings.model_validate(base | {"classes": {"financial": {"action": "escalate", "approvers": 2}}})
    asked = decide(PACK, refund, History(), Controls(tenant=by_two))
    assert (asked.outcome, asked.codes, asked.facts["approvers_required"]) == ("escalate", ["needs_human_approval"], 2)

    def granted(names: tuple[str, ...]) -> str:
        approvers = {name: ("finance",) for name in names}
        return decide(PACK, refund, History(), Controls(tenant=by_two), approval_granted=True, approvers=approvers).outcome

    assert (granted(("bob",)), granted(("bob", "carol"))) == ("deny", "allow")
    denied = TenantSettings.model_validate(base | {"classes": {"financial": {"action": "deny"}}})
    verdict = decide(PACK, refund, History(), Controls(tenant=denied))
    assert (verdict.outcome, verdict.codes) == ("deny", ["class_escalation_denied", "needs_human_approval"])
    small = dataclasses.replace(refund, args=refund.args | {"amount_usd": 10.0})
    assert decide(PACK, small, History(), Controls(tenant=denied)).outcome == "allow"  # what needed no human still runs
    with pytest.raises(ValueError, match="choose deny or escalate"):
        TenantSettings.model_validate({"classes": {"financial": {"action": "allow"}}})
    with pytest.raises(ValueError, match="not risk classes"):
        TenantSettings.model_validate({"classes": {"finance": {"action": "deny"}}})
