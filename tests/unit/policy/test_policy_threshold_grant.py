"""A human-granted financial call over the threshold is recorded as such, never as `within_threshold` (findings oncall3 F4).

Before, one permit covered both cases with one message, and an auditor read "899.00 USD is under the tenant's
threshold of 500.00 USD (or a human granted it)"; `audit search --reason within_threshold` listed it.
"""

from __future__ import annotations

from servicekit import REPO_ROOT, ToolCatalog
from services.policy import Call, Controls, History, PackSource, compile_pack, decide

CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
PACK = compile_pack(PackSource.from_dir(REPO_ROOT / "policies" / "default"), CATALOG)


def _refund(amount: float, *, granted: bool, **args: object) -> dict[str, str]:
    call = Call(
        tenant_id="acme",
        task_id="t-1",
        tool="issue_refund",
        args={"payee_id": "cus_1001", "amount_usd": amount, "order_id": "O-1002", **args},
        proposer="agent",
        mode="autonomous",
    )
    verdict = decide(PACK, call, History(payee_known=True), Controls(), approval_granted=granted)
    assert verdict.outcome == "allow"
    return {r.code.value: r.message for r in verdict.reasons}


def test_a_granted_refund_over_the_threshold_says_it_was_over_and_a_human_granted_it() -> None:
    reasons = _refund(899.0, granted=True)
    assert reasons == {
        "approved_by_human": "a human granted this exact call",
        "over_threshold_approved": "899.00 USD is at or over the tenant's threshold of 500.00 USD: a human granted it",
    }


def test_a_refund_under_the_threshold_is_within_it_with_a_true_sentence() -> None:
    assert _refund(42.5, granted=False) == {"within_threshold": "42.50 USD is under the tenant's threshold of 500.00 USD"}


def test_a_granted_refund_under_the_threshold_is_within_it_and_not_over() -> None:
    reasons = _refund(42.5, granted=True)
    assert set(reasons) == {"approved_by_human", "within_threshold"}
    assert reasons["within_threshold"] == "42.50 USD is under the tenant's threshold of 500.00 USD"
