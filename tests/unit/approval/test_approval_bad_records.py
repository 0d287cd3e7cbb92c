"""The approver page never shows a call it cannot show faithfully: an escalation with NaN args is dead-lettered."""

from __future__ import annotations

import math

import pytest

from schemas import ActionDecided, ActionDecidedData, Reason
from servicekit import Reject
from services.approval.handlers import on_decided


def escalation(amount: float) -> ActionDecided:
    data = ActionDecidedData(
        action_id="a-1", task_id="t-1", tenant_id="acme", tool="issue_refund",
        args={"payee_id": "cus_1", "amount_usd": 1.0, "order_id": "O-1"}, action_digest="d", outcome="escalate",
        reasons=[Reason(code="needs_human_approval", policy_id="refund-threshold")], policy_version="v", latency_ms=0.1,
    )  # fmt: skip
    data = data.model_copy(update={"args": data.args | {"amount_usd": amount}})  # the contract refuses NaN: set past it
    return ActionDecided.build(data, source="tidegate/policy")


@pytest.mark.parametrize("amount", [math.nan, math.inf])
async def test_an_escalation_whose_args_hold_nan_is_refused_before_it_reaches_the_service(amount: float) -> None:
    def service() -> None:
        raise AssertionError("the service must not see it")

    with pytest.raises(Reject) as refused:
        await on_decided(service)(escalation(amount))  # type: ignore[arg-type]
    assert refused.value.code == "invalid_event"
    assert "NaN or Infinity" in refused.value.message
