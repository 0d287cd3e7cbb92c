"""Tools that read the record never die on it: each bad value is skipped with its reason, the rest is used."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from pydantic import ValidationError

import schemas as s
from servicekit import KitSettings
from servicekit.unreadable import MAX_EVENT_BYTES, Skipped, Unreadable, read_event, skip_reason
from services.policy.engine import Controls, NonFiniteAmount, cedar_context, decide
from services.policy.facts import Call, History
from tidegate.ops.whatif import evaluate, load_pack

REFUND = {"payee_id": "cus_1001", "amount_usd": 42.5, "order_id": "O-5001", "reason": "r"}


def proposal(action_id: str, **args: Any) -> s.ActionProposed:
    """A proposal built in memory; its args are set without validation (the contract refuses NaN; the guards behind it are tested too)."""
    data = s.ActionProposedData(
        action_id=action_id, task_id=f"t-{action_id}", tenant_id="acme", step=1, tool="issue_refund",
        args=REFUND, proposer="tidegate/planner/playbook", mode="autonomous",
    ).model_copy(update={"args": {**REFUND, **args}})  # fmt: skip
    return s.ActionProposed.build(data, source="tidegate/planner")


@pytest.mark.parametrize("amount", [math.nan, math.inf, -math.inf, 10**400])
def test_the_contract_refuses_an_amount_that_is_not_finite(amount: float) -> None:
    with pytest.raises(ValidationError, match="finite_number"):
        s.ActionProposedData(
            action_id="a", task_id="t", tenant_id="acme", step=1, tool="issue_refund", args={**REFUND, "amount_usd": amount}, proposer="p"
        )


def raw(event: s.ActionProposed) -> bytes:
    return s.encode(event)


def with_amount(text: str) -> bytes:
    """A recorded proposal whose amount is `text` verbatim (what a producer writing NaN puts on the wire)."""
    return raw(proposal("a-nan")).replace(b'"amount_usd":42.5', b'"amount_usd":' + text.encode())


def test_a_good_event_reads() -> None:
    assert read_event("actions.proposed", raw(proposal("a-1"))).data.args["amount_usd"] == 42.5


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_event"),
        (json.dumps({"type": "tidegate.action.proposed", "data": {"x": 1}}).encode(), "invalid_event"),
        (raw(proposal("a-1")).replace(b"tidegate.action.proposed", b"tidegate.action.teleported"), "unknown_type"),
        (with_amount("NaN"), "nan"),
        (with_amount("Infinity"), "nan"),
        (with_amount("-Infinity"), "nan"),
        (b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}", "too_deep"),
        (b'{"pad":"' + b"x" * (MAX_EVENT_BYTES + 1) + b'"}', "too_large"),
        (None, "invalid_event"),
    ],
)
def test_a_bad_value_is_unreadable_with_its_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(Unreadable) as caught:
        read_event("actions.proposed", value)
    assert caught.value.reason == reason


def test_an_unknown_type_on_any_topic() -> None:
    value = raw(proposal("a-1")).replace(b"tidegate.action.proposed", b"tidegate.action.teleported")
    with pytest.raises(Unreadable) as caught:
        read_event(None, value)
    assert caught.value.reason == "unknown_type"


@pytest.mark.parametrize("text", ["1e999", "-2.5E+400", "1e1000"])
def test_a_number_too_large_to_be_finite_in_args_is_a_nan(text: str) -> None:
    with pytest.raises(Unreadable) as caught:
        read_event("actions.proposed", with_amount(text))
    assert caught.value.reason == "nan"


def test_hex_that_looks_like_an_exponent_is_read_as_usual() -> None:
    event = proposal("a-1", order_id="9e999", reason="ab3e512-4e400")
    assert read_event("actions.proposed", raw(event)).data.args["order_id"] == "9e999"
    assert read_event("actions.proposed", with_amount("1e300")).data.args["amount_usd"] == 1e300


def test_an_infinite_amount_built_in_memory_is_skipped_by_what_if() -> None:
    kit = KitSettings()
    report = evaluate(load_pack(kit.policy_dir, kit.tools_dir), [proposal("a-inf", amount_usd=math.inf).data], [])
    assert (report.evaluated, report.skipped.summary()) == (0, "skipped 1: nan 1")


def test_a_string_that_spells_nan_is_not_a_nan() -> None:
    event = read_event("actions.proposed", raw(proposal("a-1", reason="NaN and Infinity 1e999")))
    assert event.data.args["reason"] == "NaN and Infinity 1e999"


def test_skipped_counts_read_as_a_person_reads_them() -> None:
    skipped = Skipped()
    assert skipped.summary() == "skipped 0"
    for reason in ("nan", "invalid_event", "invalid_event"):
        skipped.add(reason, "topic[0]@1", "why")
    assert skipped.summary() == "skipped 3: invalid_event 2, nan 1"
    assert skipped.as_dict()["by_reason"] == {"invalid_event": 2, "nan": 1}


# --- the policy engine refuses money that is not a number ----------------------------------------------


@pytest.mark.parametrize(
    ("amount", "message"),
    [(math.nan, "amount is not a finite number"), (-math.nan, "amount is not a finite number"), (math.inf, "greater than the maximum")],
)
def test_the_engine_denies_an_amount_that_is_not_finite(amount: float, message: str) -> None:
    kit = KitSettings()
    pack = load_pack(kit.policy_dir, kit.tools_dir)
    verdict = decide(pack, Call.from_proposal(proposal("a-1", amount_usd=amount).data), History(), Controls())
    assert verdict.outcome == "deny"
    assert verdict.codes == ["invalid_args"]
    assert message in verdict.reasons[0].message  # NaN passes the JSON Schema's bounds: the engine's own guard refuses it


def test_the_engine_denies_a_spend_that_is_not_finite() -> None:
    kit = KitSettings()
    pack = load_pack(kit.policy_dir, kit.tools_dir)
    verdict = decide(pack, Call.from_proposal(proposal("a-1").data), History(spend_task_usd=math.nan), Controls())
    assert (verdict.outcome, verdict.codes) == ("deny", ["invalid_args"])
    assert "spend_task_usd" in verdict.reasons[0].message


def test_cents_refuse_nan_with_a_clear_error() -> None:
    kit = KitSettings()
    pack = load_pack(kit.policy_dir, kit.tools_dir)
    call = Call.from_proposal(proposal("a-1").data)
    from services.policy.facts import compute_facts

    spec = pack.catalog.get("issue_refund")
    assert spec is not None
    tenant = pack.settings.tenant("acme")
    facts = compute_facts(call, spec, tenant, History(), sensitive_patterns=[], tenant_budget_usd=None)
    with pytest.raises(NonFiniteAmount, match="refund_threshold_usd is not a finite number"):
        cedar_context(call, facts, spec.risk, tenant.model_copy(update={"refund_threshold_usd": math.nan}), False)


# --- what-if skips what it cannot decide, and decides the rest -----------------------------------------


def decided(p: s.ActionProposedData, outcome: str, code: str, **facts: Any) -> s.ActionDecidedData:
    return s.ActionDecidedData(
        action_id=p.action_id, task_id=p.task_id, tenant_id=p.tenant_id, tool=p.tool, args=REFUND, action_digest="d",
        outcome=outcome, reasons=[s.Reason(code=s.ReasonCode(code), policy_id="x")], policy_version="v", latency_ms=1.0,  # type: ignore[arg-type]
        facts={"payee": p.args["payee_id"], "payee_is_new": False, "spend_task_usd": 0, "spend_tenant_usd": 0, **facts},
    ).model_copy(update={"args": p.args})  # fmt: skip


def test_whatif_skips_a_nan_proposal_and_a_bad_recorded_fact_and_decides_the_rest() -> None:
    kit = KitSettings()
    pack = load_pack(kit.policy_dir, kit.tools_dir)
    good, nan, bad_fact = proposal("a-good").data, proposal("a-nan", amount_usd=math.nan).data, proposal("a-fact").data
    earlier = Skipped()
    earlier.add("invalid_json", "tidegate.actions.proposed[0]@7", "not JSON")
    report = evaluate(
        pack,
        [good, nan, bad_fact],
        [decided(good, "allow", "within_threshold"), decided(nan, "allow", "within_threshold"),
         decided(bad_fact, "allow", "within_threshold", spend_task_usd="a lot")],
        skipped=earlier,
    )  # fmt: skip
    assert (report.evaluated, report.unchanged, report.flips) == (1, 1, [])
    assert report.skipped.summary() == "skipped 3: invalid_json 1, nan 1, not_decidable 1"
    assert report.as_dict()["skipped"]["by_reason"] == {"invalid_json": 1, "nan": 1, "not_decidable": 1}


def test_a_nan_that_breaks_a_bound_is_a_nan() -> None:
    data = s.TaskOutcomeData(task_id="t-1", tenant_id="acme", workflow="w", status="completed", summary="ok", duration_ms=1.0)
    value = s.encode(s.TaskCompleted.build(data, source="tidegate/planner")).replace(b'"total":0.0', b'"total":NaN')
    assert b"NaN" in value
    with pytest.raises(Unreadable) as caught:
        read_event("tasks.outcomes", value)
    assert caught.value.reason == "nan"


@pytest.mark.parametrize("text", ["id: [unclosed", "id: c1\ndescription: no task\n"])
def test_a_broken_eval_case_is_refused_naming_its_file(tmp_path: Any, text: str) -> None:
    from tidegate.ops.evals import load_set

    (tmp_path / "c1.yaml").write_text(text)
    with pytest.raises(ValueError, match=r"c1\.yaml"):
        load_set(tmp_path)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("amount is NaN", "nan"),
        ("Input should be a finite number", "nan"),
        ("an infinite budget", "nan"),
        ("tenant globex has no settings", "not_decidable"),  # "tenant" holds the letters n-a-n: not a NaN
        ("maintenance window", "not_decidable"),
    ],
)
def test_a_skip_is_called_nan_only_for_a_number_that_is_not_finite(message: str, reason: str) -> None:
    assert skip_reason(ValueError(message)) == reason
