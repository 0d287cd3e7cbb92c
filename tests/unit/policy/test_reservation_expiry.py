"""The budget held for a call that never ran is given back once its authorization expired (plus a margin), never before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from policy_at_a_time import policy_at

from schemas import ActionProposed, ActionProposedData, ActionResultData, ActionSucceeded, ActionUnknown, ResultCost
from services.policy import InMemoryPolicyRepository
from services.policy.service import PolicyService
from services.policy.settings import PolicySettings

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
RESULT = {"task_id": "t-1", "tenant_id": "acme", "tool": "issue_refund", "attempts": 1, "duration_ms": 1.0}


@pytest.fixture
def service(tmp_path: Path) -> PolicyService:
    return policy_at(T0, tmp_path, PolicySettings(authorization_ttl_s=60, reservation_expiry_margin_s=30))


def refund(action_id: str) -> ActionProposed:
    data = ActionProposedData(
        action_id=action_id, task_id="t-1", tenant_id="acme", step=1, tool="issue_refund",
        args={"payee_id": "cus_1001", "amount_usd": 40.0, "order_id": "O-1"}, proposer="tests", mode="autonomous",
    )  # fmt: skip
    return ActionProposed.build(data, source="tests")


async def test_a_reservation_with_no_result_is_released_after_expiry_and_margin_and_a_late_result_counts_again(
    service: PolicyService,
) -> None:
    repo = service.repo
    assert isinstance(repo, InMemoryPolicyRepository)
    for action_id in ("never-ran", "unknown", "ran"):
        await service.on_proposed(refund(action_id))
    assert repo.spend[("acme", "*")] == pytest.approx(0.03)
    await service.on_result(ActionUnknown.build(ActionResultData(action_id="unknown", status="unknown", **RESULT), source="x"))
    await service.on_result(
        ActionSucceeded.build(ActionResultData(action_id="ran", status="succeeded", cost=ResultCost(usd=0.005), **RESULT), source="x")
    )
    assert repo.spend[("acme", "*")] == pytest.approx(0.025)

    assert await service.release_expired(T0 + timedelta(seconds=89)) == []  # 60 s lifetime + 30 s margin not over yet
    assert await service.release_expired(T0 + timedelta(seconds=91)) == ["never-ran"]  # the unknown one stays held
    assert repo.spend[("acme", "*")] == pytest.approx(0.015)
    assert repo.spend[("acme", "t-1")] == pytest.approx(0.015)
    assert await service.release_expired(T0 + timedelta(days=1)) == []  # once

    # The call ran after all (started just before its expiry, reported late): its cost is spend again.
    await service.on_result(
        ActionSucceeded.build(ActionResultData(action_id="never-ran", status="succeeded", cost=ResultCost(usd=0.004), **RESULT), source="x")
    )
    assert repo.spend[("acme", "*")] == pytest.approx(0.019)
    assert repo.reservations["never-ran"][1] == "settled"


async def test_a_proposal_whose_args_hold_nan_is_dead_lettered_with_its_reason(service: PolicyService) -> None:
    import math

    from servicekit import Reject
    from services.policy.handlers import PolicyHandlers

    event = refund("nan")
    event = event.model_copy(update={"data": event.data.model_copy(update={"args": {**event.data.args, "amount_usd": math.nan}})})
    handlers = PolicyHandlers(service)
    with pytest.raises(Reject) as refused:
        await handlers.proposed(event)
    assert (refused.value.code, refused.value.message) == ("invalid_args", "args of nan hold NaN or Infinity")
    with pytest.raises(ValueError, match="one event at a time"):  # the bus falls back to `proposed` for each event
        await handlers.proposed_batch([refund("fine"), event])
    repo = service.repo
    assert isinstance(repo, InMemoryPolicyRepository)
    assert repo.decisions == {}


async def test_a_policy_host_ahead_of_the_broker_holds_the_budget_until_the_authorization_expired_at_the_brokers_time(
    service: PolicyService,
) -> None:
    """A policy host ahead of the broker's released the budget of an authorization the executor could still carry out (its
    expiry judged at the broker's time): a swept call then ran without its reservation. The sweep's time is the broker's."""
    repo = service.repo
    assert isinstance(repo, InMemoryPolicyRepository)
    broker = [T0]
    service.issuing_clock = lambda: broker[0]
    await service.on_proposed(refund("held"))  # authorized at T0 (the broker's time), 60 s + 30 s margin
    service.clock = lambda: T0 + timedelta(seconds=700)  # this host's clock, ten minutes ahead
    broker[0] = T0 + timedelta(seconds=50)  # the authorization still valid at the broker's (and the executor's) time
    assert await service.release_expired() == []
    broker[0] = T0 + timedelta(seconds=91)
    assert await service.release_expired() == ["held"]
