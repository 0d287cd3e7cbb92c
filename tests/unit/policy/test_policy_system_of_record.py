"""A refund is bounded by the system of record: what a trusted read of the charge said earlier in the task, not the agent's figures."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from schemas import ActionProposed, ActionProposedData, ActionResultData, ActionSucceeded, Envelope
from servicekit import REPO_ROOT, ControlState, EventOutlet, SigningKey, ToolCatalog
from services.policy import InMemoryPolicyRepository, PackSource, PolicyService, compile_pack, in_process
from services.policy.settings import PolicySettings

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


class _WatchedRepository(InMemoryPolicyRepository):
    """The in-memory repository, telling when a decision looked for results it is still waiting on."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = asyncio.Event()

    async def awaiting_results(self, tenant_id: str, task_id: str) -> list[str]:
        tools = await super().awaiting_results(tenant_id, task_id)
        if tools:
            self.waiting.set()
        return tools


async def test_a_refund_proposed_before_the_charges_result_arrived_waits_for_it(tmp_path: Path) -> None:
    repo = _WatchedRepository()
    service = PolicyService(
        catalog=CATALOG,
        pack=compile_pack(PackSource.from_dir(REPO_ROOT / "policies" / "default"), CATALOG),
        repo=repo,
        signer=SigningKey.load_or_create(tmp_path, "policy"),
        keys_dir=tmp_path,
        control=ControlState(),
        publish_many=EventOutlet(_nowhere).publish_many,
        settings=PolicySettings(provenance_wait_s=60),  # far longer than the test: it is the result that ends the wait
    )
    read = ActionProposedData(
        action_id="read-ch_1", task_id="t-1", tenant_id="acme", step=1, tool="stripe_get_charge", args={"charge_id": "ch_1"},
        proposer="agent", mode="autonomous",
    )  # fmt: skip
    authorized = (await service.on_proposed(ActionProposed.build(read, source="agent"))).decided
    assert authorized is not None
    assert authorized.data.outcome == "allow"
    deciding = asyncio.create_task(_refund(service, "a-1", "ch_1", 60.0))
    await repo.waiting.wait()  # the refund is being decided while the charge's result is unseen
    assert not deciding.done()
    await _read_charge(service, "ch_1", refundable=50.0)
    d = await deciding
    assert (d.outcome, [r.code.value for r in d.reasons]) == ("deny", ["exceeds_system_of_record"])


async def _nowhere(topic: str, event: Envelope) -> None:
    return None
