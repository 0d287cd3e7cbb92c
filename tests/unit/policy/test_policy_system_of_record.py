"""A refund is bounded by the system of record: what a trusted read of the charge said earlier in the task, not the agent's figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from schemas import ActionProposed, ActionProposedData, ActionResultData, ActionSucceeded
from servicekit import REPO_ROOT, ToolCatalog
from services.policy import PackSource, PolicyService, compile_pack, in_process

CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")


@pytest.fixture
def service(tmp_path: Path) -> PolicyService:
    # The pack's own `acme` tenant: autonomous, refunds under 500 USD allowed, cus_1001 a known payee.
    return in_process(compile_pack(PackSource.from_dir(REPO_ROOT / "policies" / "default"), CATALOG), CATALOG, keys_dir=tmp_path)


async def _read_charge(service: PolicyService, charge: str, refundable: float, currency: str = "usd") -> None:
    result = {"charge_id": charge, "amount_usd": 80.0, "amount_refunded_usd": 80.0 - refundable, "amount_refundable_usd": refundable,
              "currency": currency}  # fmt: skip
    data = ActionResultData(
        action_id=f"read-{charge}", task_id="t-1", tenant_id="acme", tool="stripe_get_charge", status="succeeded", result=result,
        attempts=1, duration_ms=3,
    )  # fmt: skip
    await service.on_result(ActionSucceeded.build(data, source="tidegate/executor"))


async def _refund(service: PolicyService, action_id: str, charge: str, amount: float) -> Any:
    args = {"charge_id": charge, "amount_usd": amount, "payee_id": "cus_1001"}
    data = ActionProposedData(
        action_id=action_id, task_id="t-1", tenant_id="acme", step=2, tool="stripe_refund", args=args, proposer="agent", mode="autonomous"
    )
    decided = (await service.on_proposed(ActionProposed.build(data, source="agent"))).decided
    assert decided is not None
    return decided.data


async def test_a_refund_within_what_the_charge_has_left_is_allowed(service: PolicyService) -> None:
    await _read_charge(service, "ch_1", refundable=50.0)
    d = await _refund(service, "a-1", "ch_1", 50.0)
    assert (d.outcome, [r.code.value for r in d.reasons]) == ("allow", ["within_threshold"])
    assert d.facts["record_read"] == {"amount_usd": 50.0, "currency": "usd", "source": "the result of stripe_get_charge (action read-ch_1)"}


async def test_a_refund_over_what_the_charge_has_left_is_denied(service: PolicyService) -> None:
    await _read_charge(service, "ch_1", refundable=50.0)  # 30 of the 80 charged were refunded already
    d = await _refund(service, "a-1", "ch_1", 60.0)
    assert (d.outcome, [r.code.value for r in d.reasons]) == ("deny", ["exceeds_system_of_record"])


async def test_a_refund_of_a_charge_in_another_currency_is_denied(service: PolicyService) -> None:
    await _read_charge(service, "ch_1", refundable=50.0, currency="eur")
    d = await _refund(service, "a-1", "ch_1", 10.0)
    assert (d.outcome, [r.code.value for r in d.reasons]) == ("deny", ["exceeds_system_of_record"])


async def test_a_refund_of_a_charge_the_task_never_read_escalates(service: PolicyService) -> None:
    await _read_charge(service, "ch_other", refundable=500.0)
    d = await _refund(service, "a-1", "ch_1", 10.0)
    assert (d.outcome, [r.code.value for r in d.reasons]) == ("escalate", ["record_not_read"])
    assert d.facts["record_read"] is None
