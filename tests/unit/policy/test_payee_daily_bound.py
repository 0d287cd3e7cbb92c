"""Acting as the agent of security6 F3: a refund split across tasks (a new task id per piece) is bounded per payee per day.

The default pack escalates `cumulative_threshold` at the piece that makes what the tenant's allowed calls paid one payee
over 24 hours, in any task, reach `payee_daily_threshold_usd` (null: the refund threshold); a tenant raises it or turns it off.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import (
    ActionFailed,
    ActionProposed,
    ActionProposedData,
    ActionResultData,
    ActionUnknown,
    ControlTenant,
    ControlTenantData,
    Envelope,
    ErrorInfo,
)
from servicekit import REPO_ROOT, ControlState, EventOutlet, KitSettings, SigningKey, ToolCatalog, sign_as_operator
from services.policy import Call, Controls, History, InMemoryPolicyRepository, PackSource, TenantSettings, compile_pack, decide
from services.policy.service import PolicyService
from tidegate.commands.tenant import tenant_record

CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
PACK = compile_pack(PackSource.from_dir(REPO_ROOT / "policies" / "default"), CATALOG)
TENANT = {"allow_autonomous": True, "internal_domains": ["acme.example"], "known_payees": ["cus_1002", "cus_1008"]}
NOW = [datetime(2025, 1, 1, tzinfo=UTC)]


async def _service(tmp_path: Path, **settings: Any) -> PolicyService:
    async def publish(topic: str, event: Envelope) -> None:
        return None

    NOW[0] = datetime(2025, 1, 1, tzinfo=UTC)
    svc = PolicyService(
        catalog=CATALOG,
        pack=PACK,
        repo=InMemoryPolicyRepository(clock=lambda: NOW[0]),
        signer=SigningKey.load_or_create(tmp_path, "policy"),
        keys_dir=tmp_path,
        control=ControlState(),
        publish_many=EventOutlet(publish).publish_many,
    )
    record = ControlTenant.build(ControlTenantData(tenant_id="acme", settings=TENANT | settings, set_by="admin"), source="cli")
    await svc.on_control(sign_as_operator(KitSettings(keys_dir=tmp_path / "operator"), record))
    return svc


async def _refund(svc: PolicyService, action_id: str, task_id: str, amount: float, payee: str = "cus_1002") -> tuple[str, list[str], Any]:
    data = ActionProposedData(
        action_id=action_id,
        task_id=task_id,
        tenant_id="acme",
        step=1,
        tool="issue_refund",
        args={"payee_id": payee, "amount_usd": amount, "order_id": "O-5002"},
        proposer="agent",
        mode="autonomous",
    )
    decided = (await svc.on_proposed(ActionProposed.build(data, source="agent"))).decided
    assert decided is not None
    return decided.data.outcome, [r.code.value for r in decided.data.reasons], decided.data


async def test_the_probes_split_across_two_tasks_escalates_the_second_piece(tmp_path: Path) -> None:
    svc = await _service(tmp_path)
    first = await _refund(svc, "a-1", "t-1", 300)
    second = await _refund(svc, "a-2", "t-2", 300)
    assert first[:2] == ("allow", ["within_threshold"])
    assert second[:2] == ("escalate", ["cumulative_threshold"])
    assert (second[2].facts["paid_task_usd"], second[2].facts["paid_payee_usd"]) == (0.0, 300.0)
    assert second[2].reasons[0].policy_id == "cumulative-threshold-payee"
    assert second[2].reasons[0].message == (
        "300.00 USD on top of the 300.00 USD the tenant paid this payee over the last 24 hours reaches its per-payee daily "
        "threshold of 500.00 USD: a human approves it"
    )
    # Another payee, and the same one once the first piece is more than 24 hours old, start from nothing.
    assert (await _refund(svc, "a-3", "t-3", 300, payee="cus_1008"))[:2] == ("allow", ["within_threshold"])
    NOW[0] += timedelta(hours=24, minutes=1)
    assert (await _refund(svc, "a-4", "t-4", 300))[:2] == ("allow", ["within_threshold"])


async def test_an_escalated_piece_is_not_counted_until_a_grant_allows_it(tmp_path: Path) -> None:
    svc = await _service(tmp_path)
    assert (await _refund(svc, "a-1", "t-1", 300))[0] == "allow"
    assert (await _refund(svc, "a-2", "t-2", 300))[0] == "escalate"
    assert (await _refund(svc, "a-3", "t-3", 199.99))[:2] == ("allow", ["within_threshold"])  # 499.99 USD let out today


async def test_a_tenant_that_raised_the_bound_or_turned_it_off_lets_the_second_piece_run(tmp_path: Path) -> None:
    # The tenant-wide daily payout bound (twice the threshold unless set) would stop these pieces first: widened with it.
    raised = await _service(tmp_path, payee_daily_threshold_usd=2000, tenant_daily_payout_usd=5000)
    assert [(await _refund(raised, f"a-{i}", f"t-{i}", 300))[0] for i in range(8)] == ["allow"] * 6 + ["escalate"] * 2
    off = await _service(tmp_path / "off", payee_daily_threshold_usd="off", tenant_daily_payout_usd="off")
    assert [(await _refund(off, f"a-{i}", f"t-{i}", 400))[0] for i in range(5)] == ["allow"] * 5


def _decide(paid_payee: float, paid_task: float = 0.0, *, granted: bool = False) -> list[tuple[str, str]]:
    call = Call(
        tenant_id="acme",
        task_id="t-1",
        tool="issue_refund",
        args={"payee_id": "cus_1002", "amount_usd": 300, "order_id": "O-5002"},
        proposer="agent",
        mode="autonomous",
    )
    history = History(payee_known=True, paid_task_usd=paid_task, paid_payee_usd=paid_payee)
    verdict = decide(PACK, call, history, Controls(), approval_granted=granted)
    return [(r.code.value, r.policy_id) for r in verdict.reasons]


def test_a_granted_piece_over_the_payees_figure_says_a_human_granted_it_never_within_threshold() -> None:
    assert _decide(300, granted=True) == [
        ("approved_by_human", "approved-by-human"),
        ("over_threshold_approved", "financial-cumulative-payee-granted"),
    ]


def test_one_threshold_rule_fires_per_call_the_tasks_before_the_payees() -> None:
    assert _decide(300, paid_task=300) == [("cumulative_threshold", "cumulative-threshold-task")]
    assert _decide(300) == [("cumulative_threshold", "cumulative-threshold-payee")]
    assert _decide(199.99) == [("within_threshold", "financial-within-threshold")]


def test_the_setting_follows_the_refund_threshold_unless_set_and_off_is_never_a_zero() -> None:
    assert PACK.settings.tenant("globex").payee_daily_threshold() == 200.0  # null in `default`: globex's own threshold
    assert TenantSettings(refund_threshold_usd=300, payee_daily_threshold_usd=1500).payee_daily_threshold() == 1500.0
    # `--setting payee_daily_threshold_usd=off` reaches the model as YAML's False: off, not 0 USD.
    assert tenant_record({}, {"payee_daily_threshold_usd": False}, []) == {"payee_daily_threshold_usd": False}
    assert TenantSettings.model_validate({"payee_daily_threshold_usd": False}).payee_daily_threshold() is None
    assert TenantSettings.model_validate({"payee_daily_threshold_usd": "OFF"}).payee_daily_threshold() is None
    for bad in (True, -1, float("inf"), 1e15, "none"):
        with pytest.raises(ValidationError, match="payee_daily_threshold_usd"):
            TenantSettings.model_validate({"payee_daily_threshold_usd": bad})


def test_the_twins_payouts_sum_what_was_paid_after_a_moment_in_any_order_they_came() -> None:
    from services.policy._memory_repository import _Payouts

    at = [datetime(2026, 12, 5, h, tzinfo=UTC) for h in range(6)]
    paid = _Payouts()
    for when, amount in [(at[1], 10.0), (at[3], 20.0), (at[2], 5.0), (at[5], 1.0)]:  # a clock set back inserts in its place
        paid.add(when, amount)
    assert [paid.after(moment) for moment in at] == [36.0, 26.0, 21.0, 1.0, 1.0, 0.0]  # strictly after, as `at > since`
    assert _Payouts().after(at[0]) == 0.0


async def _ended(svc: PolicyService, action_id: str, task_id: str, status: str) -> None:
    """The executor's result of an allowed refund: `failed` (nothing was paid) or `unknown` (it may have been)."""
    data = ActionResultData(
        action_id=action_id, task_id=task_id, tenant_id="acme", step=1, tool="issue_refund", status=status,  # type: ignore[arg-type]
        attempts=1, duration_ms=5.0, error=ErrorInfo(type="refund_exceeds_order", message="over what was paid"),
    )  # fmt: skip
    kind = ActionFailed if status == "failed" else ActionUnknown
    await svc.on_result(kind.build(data, source="tidegate/executor"))


async def test_a_refund_that_failed_paid_nothing_and_counts_toward_no_bound(tmp_path: Path) -> None:
    """An approver read "the tenant paid this payee 1,105.48 USD" where 0.48 USD had been paid, and every further cent to the
    payee escalated for a day (the platform probe): failed refunds counted as paid. One whose outcome is unknown still counts."""
    svc = await _service(tmp_path)
    assert (await _refund(svc, "a-1", "t-1", 300))[:2] == ("allow", ["within_threshold"])
    await _ended(svc, "a-1", "t-1", "failed")
    allowed = await _refund(svc, "a-2", "t-2", 300)
    assert allowed[:2] == ("allow", ["within_threshold"])  # the failed 300 is not on the payee's day
    assert allowed[2].facts["paid_payee_usd"] == 0.0
    await _ended(svc, "a-2", "t-2", "unknown")  # it may have been paid: it stays on the payee's day
    held = await _refund(svc, "a-3", "t-3", 300)
    assert held[:2] == ("escalate", ["cumulative_threshold"])
    assert held[2].facts["paid_payee_usd"] == 300.0
