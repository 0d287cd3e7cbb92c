"""A call on an entry whose read the task tried and that failed says so (`record_read_failed`, with the read's error).

The on-call probe (findings oncall3 F3) killed Stripe: the refund escalated `record_not_read`, "the task never read
the record", though the task had tried and Stripe had answered HTTP 500 three times.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from schemas import ActionFailed, ActionProposed, ActionProposedData, ActionResultData, ErrorInfo
from servicekit import REPO_ROOT, ToolCatalog
from services.policy import PackSource, PolicyService, compile_pack, in_process

CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
STRIPE_DOWN = ErrorInfo(type="http_500", message="Stripe: Invalid response body from API: Internal Server Error", retryable=True)


@pytest.fixture
def service(tmp_path: Path) -> PolicyService:
    # The pack's own `acme` tenant: autonomous, refunds under 500 USD allowed, cus_1001 a known payee.
    return in_process(compile_pack(PackSource.from_dir(REPO_ROOT / "policies" / "default"), CATALOG), CATALOG, keys_dir=tmp_path)


async def _propose(service: PolicyService, action_id: str, tool: str, args: dict[str, Any], step: int) -> Any:
    data = ActionProposedData(
        action_id=action_id, task_id="t-1", tenant_id="acme", step=step, tool=tool, args=args, proposer="agent", mode="autonomous"
    )
    decided = (await service.on_proposed(ActionProposed.build(data, source="agent"))).decided
    assert decided is not None
    return decided.data


async def _read_fails(service: PolicyService, charge: str, *, attempts: int, error: ErrorInfo | None = STRIPE_DOWN) -> None:
    """The task reads the charge (allowed), and the executor reports the read failed after `attempts` calls."""
    assert (await _propose(service, f"read-{charge}", "stripe_get_charge", {"charge_id": charge}, 1)).outcome == "allow"
    data = ActionResultData(
        action_id=f"read-{charge}", task_id="t-1", tenant_id="acme", tool="stripe_get_charge", status="failed", error=error,
        attempts=attempts, duration_ms=3,
    )  # fmt: skip
    await service.on_result(ActionFailed.build(data, source="tidegate/executor"))


async def _refund(service: PolicyService, charge: str) -> Any:
    return await _propose(service, "a-1", "stripe_refund", {"charge_id": charge, "amount_usd": 42.5, "payee_id": "cus_1001"}, 2)


async def test_a_refund_of_a_charge_whose_read_failed_says_the_read_failed_and_why(service: PolicyService) -> None:
    await _read_fails(service, "ch_1", attempts=3)
    d = await _refund(service, "ch_1")
    assert (d.outcome, [r.code.value for r in d.reasons]) == ("escalate", ["record_read_failed"])
    message = d.reasons[0].message
    assert "read of ch_1 failed" in message
    assert "http_500: Stripe: Invalid response body from API: Internal Server Error after 3 attempts" in message
    assert "never read" not in message
    assert d.facts["record_read_failed"] == {
        "error": "http_500: Stripe: Invalid response body from API: Internal Server Error after 3 attempts",
        "source": "stripe_get_charge (action read-ch_1)",
    }


async def test_a_failed_read_of_another_charge_leaves_this_one_never_read(service: PolicyService) -> None:
    await _read_fails(service, "ch_other", attempts=3)
    d = await _refund(service, "ch_1")
    assert (d.outcome, [r.code.value for r in d.reasons]) == ("escalate", ["record_not_read"])
    assert d.facts["record_read_failed"] is None


async def test_a_read_the_executor_refused_before_calling_was_not_tried(service: PolicyService) -> None:
    refused = ErrorInfo(type="authorization_expired", message="the authorization expired before the call")
    await _read_fails(service, "ch_1", attempts=0, error=refused)
    d = await _refund(service, "ch_1")
    assert (d.outcome, [r.code.value for r in d.reasons]) == ("escalate", ["record_not_read"])
