"""Acting as the compromised agent of red team F5: refunds fanned out across known payees are bounded per tenant per day.

One client key paid three known payees 499.99 + 499.99 + 120 USD, one task per piece, each under the 500 USD threshold
and under its payee's daily bound, with no human. The default pack now escalates `daily_payout_bound` at the call that
would take what the tenant paid out over 24 hours without a human, any task and payee, over `tenant_daily_payout_usd`
(null: twice the refund threshold). A call a human approved does not count; a call whose result failed frees its share.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError
from test_payee_daily_bound import NOW, PACK, _ended, _refund, _service
from test_policy_service import approval

from schemas import ApprovalGranted
from servicekit import SigningKey
from services.policy import Call, Controls, History, TenantSettings
from services.policy.engine import still_holds
from services.policy.service import PolicyService
from tidegate.commands.tenant import tenant_record

PAYEES = ["cus_1001", "cus_1002", "cus_1003", "cus_1004", "cus_1008"]


class Agent:
    """The compromised agent: it proposes refunds with its client key, one task per piece, and reads the decisions."""

    def __init__(self, svc: PolicyService) -> None:
        self.svc, self.sent = svc, 0

    async def refund(self, payee: str, amount: float) -> Any:
        """One refund in a task of its own: its decision's data."""
        self.sent += 1
        outcome, codes, data = await _refund(self.svc, f"a-{self.sent}", f"t-{self.sent}", amount, payee)
        assert (data.outcome, [r.code.value for r in data.reasons]) == (outcome, codes)
        return data

    async def ended(self, decided: Any, status: str) -> None:
        """The executor's result of an allowed refund: `failed` (nothing was paid) or `unknown` (it may have been)."""
        await _ended(self.svc, decided.action_id, decided.task_id, status)


async def _agent(tmp_path: Path, **settings: Any) -> Agent:
    return Agent(await _service(tmp_path, known_payees=PAYEES, **settings))


def _outcome(decided: Any) -> tuple[str, list[str]]:
    return decided.outcome, [r.code.value for r in decided.reasons]


async def test_the_red_teams_fan_out_to_three_payees_escalates_the_piece_that_goes_over_the_tenants_day(tmp_path: Path) -> None:
    agent = await _agent(tmp_path)
    first, second = await agent.refund("cus_1008", 499.99), await agent.refund("cus_1002", 499.99)
    third = await agent.refund("cus_1003", 120)
    assert [_outcome(d) for d in (first, second)] == [("allow", ["within_threshold"])] * 2
    # Neither allowed refund has run yet (no result): what was decided counts, as for the payee's figure.
    assert _outcome(third) == ("escalate", ["daily_payout_bound"])
    assert (third.facts["paid_tenant_usd"], third.facts["paid_payee_usd"]) == (999.98, 0.0)
    [reason] = third.reasons
    assert reason.policy_id == "daily-payout-bound"
    assert reason.message == (
        "120.00 USD on top of the 999.98 USD the tenant paid out over the last 24 hours without a human would take it over "
        "its daily payout bound of 1,000.00 USD: a human approves it"
    )
    # Up to the bound itself still runs; a day later the figure starts again.
    assert _outcome(await agent.refund("cus_1003", 0.02)) == ("allow", ["within_threshold"])
    assert _outcome(await agent.refund("cus_1004", 0.01)) == ("escalate", ["daily_payout_bound"])
    NOW[0] += timedelta(hours=24, minutes=1)
    assert _outcome(await agent.refund("cus_1004", 499.99)) == ("allow", ["within_threshold"])


async def test_a_refund_a_human_approved_does_not_count_toward_the_tenants_day(tmp_path: Path) -> None:
    agent = await _agent(tmp_path)
    escalated = await agent.refund("cus_1001", 900)
    assert _outcome(escalated) == ("escalate", ["needs_human_approval"])
    key = SigningKey.load_or_create(tmp_path, "approval")
    expires = datetime.now(UTC) + timedelta(hours=1)
    granted = await agent.svc.on_approval(approval(ApprovalGranted, SimpleNamespace(data=escalated), key, expires_at=expires))
    assert granted is not None
    assert granted.outcome == "allow"
    # The 900 USD a human approved is on nobody's "without a human" figure: the agent's own pieces still have 1,000 USD.
    pieces = [await agent.refund(payee, 499.99) for payee in ("cus_1002", "cus_1003")]
    assert [_outcome(d) for d in pieces] == [("allow", ["within_threshold"])] * 2
    over = await agent.refund("cus_1004", 120)
    assert (_outcome(over), over.facts["paid_tenant_usd"]) == (("escalate", ["daily_payout_bound"]), 999.98)


async def test_a_refund_that_failed_frees_its_share_and_one_whose_outcome_is_unknown_keeps_it(tmp_path: Path) -> None:
    agent = await _agent(tmp_path)
    first, second = await agent.refund("cus_1008", 499.99), await agent.refund("cus_1002", 499.99)
    await agent.ended(first, "failed")  # nothing was paid
    third = await agent.refund("cus_1003", 120)
    assert (_outcome(third), third.facts["paid_tenant_usd"]) == (("allow", ["within_threshold"]), 499.99)
    await agent.ended(second, "unknown")  # the money may have moved: it stays on the tenant's day
    fourth = await agent.refund("cus_1004", 400)
    assert (_outcome(fourth), fourth.facts["paid_tenant_usd"]) == (("escalate", ["daily_payout_bound"]), 619.99)


async def test_a_tenant_sets_its_own_bound_or_turns_it_off(tmp_path: Path) -> None:
    raised = await _agent(tmp_path, tenant_daily_payout_usd=1500)
    amounts = [await raised.refund(payee, 499.99) for payee in ("cus_1001", "cus_1002", "cus_1003", "cus_1004")]
    assert [d.outcome for d in amounts] == ["allow", "allow", "allow", "escalate"]
    off = await _agent(tmp_path / "off", tenant_daily_payout_usd="off")
    assert [(await off.refund(payee, 499.99)).outcome for payee in PAYEES] == ["allow"] * 5


def test_the_bound_is_twice_the_refund_threshold_unless_set_and_off_is_never_a_zero() -> None:
    assert PACK.settings.tenant("globex").tenant_daily_payout() == 400.0  # null in `default`: twice globex's 200
    assert TenantSettings(refund_threshold_usd=300, tenant_daily_payout_usd=5000).tenant_daily_payout() == 5000.0
    assert TenantSettings(refund_threshold_usd=1e12).tenant_daily_payout() == 1e12  # capped where its cents stay a Cedar Long
    # `--setting tenant_daily_payout_usd=off` reaches the model as YAML's False: off, not 0 USD; `--daily-payout off` as "off".
    assert TenantSettings.model_validate(tenant_record({}, {"tenant_daily_payout_usd": False}, [])).tenant_daily_payout() is None
    assert TenantSettings.model_validate({"tenant_daily_payout_usd": "Off"}).tenant_daily_payout() is None
    for bad in (True, -1, float("nan"), 1e15, "none"):
        with pytest.raises(ValidationError, match="tenant_daily_payout_usd"):
            TenantSettings.model_validate({"tenant_daily_payout_usd": bad})


def test_a_decision_taken_on_a_stale_snapshot_is_taken_again_only_if_it_reads_the_tenants_day() -> None:
    def call(tool: str, args: dict[str, Any]) -> Call:
        return Call(tenant_id="acme", task_id="t-1", tool=tool, args=args, proposer="agent", mode="autonomous")

    seen, now = History(payee_known=True), History(payee_known=True, paid_tenant_usd=999.98)
    refund = call("issue_refund", {"payee_id": "cus_1003", "amount_usd": 120, "order_id": "O-1"})
    note = call("add_internal_note", {"ticket_id": "T-1", "body": "refund pending"})
    assert not still_holds(PACK, refund, Controls(), seen, now)
    assert still_holds(PACK, note, Controls(), seen, now)  # a note's facts carry no payout figure: nothing to take again
