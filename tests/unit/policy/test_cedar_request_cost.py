"""What a decision asks of Cedar, cut without changing any answer: its context's text once, what the pack reads, its action's policies.

Each decision paid cedarpy's `json.dumps` of a ~1.3 KB context (and orjson's again for the answers the pack remembers),
Cedar's parse of attributes no policy of the pack reads, and the evaluation of every policy of the tenant's set, among
them those scoped to other risk classes, which cannot fire for the call (bench.policy_cpu, docs/benchmarks.md). These
tests hold the cuts to what a pack author relies on: the same outcome, reasons and error messages as Cedar gives over
the whole pack with the whole context as a dict.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import cedarpy
import pytest

from servicekit import REPO_ROOT, ToolCatalog
from services.policy import engine
from services.policy.engine import Controls, Verdict, decide
from services.policy.facts import Call, History
from services.policy.pack import CompiledPack, PackSource, compile_pack, context_reads, read_of
from services.policy.packtest import load_cases, run_case
from services.policy.tenant_settings import TenantSettings

PACK_DIR = REPO_ROOT / "policies" / "default"
CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
ONBOARDED = Controls(tenant=TenantSettings())

# Every form an action scope takes, policies bound to a tenant, and two that fail at evaluation: one for the calls its
# scope matches (the error must still be reported), one whose scope no refund matches (its error must never be).
SCOPES = """
@id("refund-big") @outcome("escalate") @reason("needs_human_approval")
permit (principal, action == Action::"issue_refund", resource) when { context.facts.amount_cents >= 2000 };

@id("money-or-notes") @outcome("allow") @reason("within_threshold")
permit (principal, action in [Action::"financial", Action::"write_low"], resource) when { context.facts.amount_cents < 2000 };

@id("any-write") @outcome("allow") @reason("low_risk_write_allowed")
permit (principal, action, resource) when { context.writes };

@id("reads") @outcome("allow") @reason("read_allowed")
permit (principal, action in Action::"read", resource);

@id("acme-tags") @outcome("deny") @reason("human_only")
forbid (principal, action == Action::"tag_ticket", resource) when { context.tenant == "acme" };

@id("globex-money") @outcome("deny") @reason("human_only")
forbid (principal, action in Action::"financial", resource == Tenant::"globex");

@id("overflow-money") @outcome("escalate") @reason("needs_human_approval")
permit (principal, action in Action::"financial", resource)
when { (context.facts.amount_cents + 1) * 9223372036854775807 * 2 > 0 };

@id("overflow-tags") @outcome("escalate") @reason("needs_human_approval")
permit (principal, action == Action::"tag_ticket", resource)
when { (context.facts.amount_cents + 1) * 9223372036854775807 * 2 > 0 };
"""


def _whole_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decide as Cedar does over the whole pack: every call against every policy."""
    monkeypatch.setattr(CompiledPack, "policy_set_for_call", lambda self, tenant, tool: self.policy_set)


def _answer(verdict: Verdict) -> tuple[str, list[str], list[str]]:
    return verdict.outcome, verdict.codes, [r.message for r in verdict.reasons]


def _calls() -> Iterator[tuple[Call, bool]]:
    for tenant in ("acme", "globex", "umbrella"):
        for tool, args in (
            ("issue_refund", {"payee_id": "cus_1001", "amount_usd": 15.0, "order_id": "O-1"}),
            ("issue_refund", {"payee_id": "cus_1001", "amount_usd": 40.0, "order_id": "O-1"}),
            ("tag_ticket", {"ticket_id": "T-1", "tags": ["x"]}),
            ("add_internal_note", {"ticket_id": "T-1", "body": "hello"}),
            ("get_ticket", {"ticket_id": "T-1"}),
        ):
            for granted in (False, True):
                yield Call(tenant, "t-1", tool, args, "agent", mode="autonomous"), granted


def test_each_call_is_decided_as_against_the_whole_set_with_only_the_policies_its_action_can_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = PackSource.from_dir(PACK_DIR)
    pack = compile_pack(PackSource(files={"scopes.cedar": SCOPES}, settings=source.settings), CATALOG)
    history = History(payee_known=True)
    sliced = [_answer(decide(pack, c, history, ONBOARDED, approval_granted=g, approvers={"a": ("finance",)} if g else None))
              for c, g in _calls()]  # fmt: skip
    # Fewer policies for a refund than its tenant's set: those scoped to reads, tags and notes are left out.
    assert pack.policy_set_for_call("acme", "issue_refund") is not pack.policy_set_for("acme")
    # Tools of one risk class with the same policies share one parsed set.
    assert pack.policy_set_for_call("umbrella", "issue_refund") is pack.policy_set_for_call("umbrella", "issue_refund")
    whole = compile_pack(PackSource(files={"scopes.cedar": SCOPES}, settings=source.settings), CATALOG)
    _whole_set(monkeypatch)
    expected = [_answer(decide(whole, c, history, ONBOARDED, approval_granted=g, approvers={"a": ("finance",)} if g else None))
                for c, g in _calls()]  # fmt: skip
    assert sliced == expected
    errors = [a for a in sliced if "policy_error" in a[1]]
    assert errors  # the refunds' and the tags' overflow still fail closed, naming the policy by the pack's own id
    assert all("overflow" in " ".join(a[2]) for a in errors)


def test_the_default_packs_cases_decide_as_against_the_whole_set(monkeypatch: pytest.MonkeyPatch) -> None:
    pack = compile_pack(PackSource.from_dir(PACK_DIR), CATALOG)
    cases = load_cases(PACK_DIR)
    sliced = [_answer(run_case(pack, case).verdict) for case in cases]
    _whole_set(monkeypatch)
    whole = compile_pack(PackSource.from_dir(PACK_DIR), CATALOG)
    assert sliced == [_answer(run_case(whole, case).verdict) for case in cases]


def test_past_its_bound_a_new_set_is_the_tenants_whole_set(monkeypatch: pytest.MonkeyPatch) -> None:
    pack = compile_pack(PackSource.from_dir(PACK_DIR), CATALOG)
    monkeypatch.setattr("services.policy.pack.CALL_SLICES", 1)
    first = pack.policy_set_for_call("acme", "issue_refund")
    assert first is not pack.policy_set_for("acme")
    assert pack.policy_set_for_call("acme", "tag_ticket") is pack.policy_set_for("acme")  # no second set parsed
    assert pack.policy_set_for_call("acme", "issue_refund") is first


REAL = cedarpy.is_authorized


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The requests Cedar is asked, in order (it still answers each)."""
    requests: list[dict[str, Any]] = []

    def spy(request: dict[str, Any], policies: Any, entities: Any) -> Any:
        requests.append(request)
        return REAL(request, policies, entities)

    monkeypatch.setattr(engine.cedarpy, "is_authorized", spy)
    return requests


def test_cedar_is_handed_the_context_as_text_and_answers_as_with_the_dict(asked: list[dict[str, Any]]) -> None:
    pack = compile_pack(PackSource.from_dir(PACK_DIR), CATALOG)
    call = Call("acme", "t-1", "issue_refund", {"payee_id": "cus_1001", "amount_usd": 15.0, "order_id": "O-1"}, "a", mode="autonomous")
    verdict = decide(pack, call, History(payee_known=True), ONBOARDED)
    [request] = asked
    assert isinstance(request["context"], str)  # not a dict for cedarpy to `json.dumps` at every call
    as_dict = request | {"context": json.loads(request["context"])}
    policies = pack.policy_set_for_call("acme", "issue_refund")
    with_dict, with_text = REAL(as_dict, policies, pack.entities).diagnostics, REAL(request, policies, pack.entities).diagnostics
    assert sorted(with_dict.reasons) == sorted(with_text.reasons)
    assert with_text.reasons
    assert not with_text.errors
    assert verdict.codes == ["draft_mode"]  # the tenant's default settings: autonomous is not allowed


def test_a_context_orjson_cannot_write_is_written_as_cedarpy_would() -> None:
    for context in ({"n": 2**70}, {"s": "half a pair \ud800"}):
        assert engine._context_text(context) == json.dumps(context)
    assert json.loads(engine._context_text({"s": "é", "n": 1, "b": True, "l": ["x"]})) == {"s": "é", "n": 1, "b": True, "l": ["x"]}


def test_cedar_is_given_only_what_the_pack_reads_of_the_context_and_answers_as_with_all_of_it(asked: list[dict[str, Any]]) -> None:
    pack = compile_pack(PackSource.from_dir(PACK_DIR), CATALOG)
    cases = load_cases(PACK_DIR)
    read = [_answer(run_case(pack, case).verdict) for case in cases]
    # A refund's request: the first case's (a tag) is asked of a set that reads no amount (what a call's set reads)
    given = next(json.loads(r["context"]) for r in asked if r["action"]["id"] == "issue_refund")
    assert "tools_called" not in given["flow"]  # no policy of the default pack reads it
    assert "record_id" not in given["facts"]
    assert given["facts"]["amount_cents"] is not None
    whole = dataclasses.replace(pack, context_read=None)
    assert read == [_answer(run_case(whole, case).verdict) for case in cases]


def test_what_policies_read_of_the_context() -> None:
    def reads(text: str) -> Any:
        return context_reads(list(json.loads(cedarpy.policies_to_json_str(text))["staticPolicies"].values()))

    assert reads("permit (principal, action, resource) when { context.facts.amount_cents > 1 && context.settings has x };") == {
        "facts": {"amount_cents": None},
        "settings": {"x": None},
    }
    assert reads("permit (principal, action, resource) when { context.flow == context.flow && context.flow.calls > 1 };") == {
        "flow": None  # a record compared as a record is read whole
    }
    assert reads("permit (principal, action, resource) when { context.settings.accept_irreversible.contains(context.risk) };") == {
        "settings": {"accept_irreversible": None},
        "risk": None,
    }
    assert reads('permit (principal, action, resource) when { context == {"a": 1} };') is None  # the context itself: all of it
    assert reads('permit (principal, action, resource) when { {"context": 1}.context == 1 };') == {}
    assert read_of({"a": {"b": 1, "c": 2}, "d": 3, "e": [1]}, {"a": {"b": None}, "e": None, "z": None}) == {"a": {"b": 1}, "e": [1]}


def test_a_calls_context_holds_only_what_the_policies_its_action_can_match_read(
    asked: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refund's request leaves out the facts only code changes' and low-risk writes' policies read; no answer changes."""
    cases, pack = load_cases(PACK_DIR), compile_pack(PackSource.from_dir(PACK_DIR), CATALOG)
    read = [_answer(run_case(pack, case).verdict) for case in cases]
    refunds = [json.loads(r["context"]) for r in asked if r["action"]["id"] == "issue_refund"]
    assert refunds
    for given in refunds:
        assert "reviewed" not in given["facts"]  # read by the code-change policies alone
        assert "confidence_pct" not in given["facts"]  # by the low-risk writes' alone
        assert "min_confidence_pct" not in given["settings"]
        assert given["facts"]["amount_cents"] is not None
    assert {r["action"]["id"] for r in asked} > {"issue_refund"}  # the cases ask of other actions' sets too
    monkeypatch.setattr(CompiledPack, "context_read_for", lambda self, policy_set: self.context_read)  # what the whole pack reads
    whole = compile_pack(PackSource.from_dir(PACK_DIR), CATALOG)
    assert read == [_answer(run_case(whole, case).verdict) for case in cases]
