"""The policy's database restored from a backup (brief h52): it refuses to start until `tidegate db catch-up`, which writes back
the decisions, reservations, spend and call endings the bus holds; a tenant's budget is never reset by a restore.

The restore is simulated as a backup taken before the tenant's first call: every row of the tenant in the policy's
schema is deleted by the database's owner. The bus still holds the decisions the policy signed and the results.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from bus_helpers import Collector, Producer
from restore_helpers import restored_before
from restore_process import refused_start

from schemas import ActionFailed, ActionResultData, ActionSucceeded, ResultCost
from servicekit import KitSettings, SigningKey, bus_history, create_pool
from servicekit.authority import sign_event
from servicekit.bus_history import BehindTheBus
from servicekit.catch_up_marks import SCHEMAS, catch_up_finished, unfinished_catch_up
from services.executor.app import build as build_executor
from services.policy.app import build
from services.policy.restored import Restoration as PolicyRestoration
from tidegate.commands.tenant import publish_tenant
from tidegate.ops.catch_up import NotCaughtUp, catch_up

REFUND = {"payee_id": "cus_1002", "amount_usd": 120.0, "order_id": "O-5002"}
CAP = 0.025  # the tenant's spend cap: each refund reserves the tool's 0.01 USD, so two fit, not three


@pytest.fixture
async def pool(infra: Any) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(infra.database_url, max_size=2)
    yield p
    await p.close()


async def _state(pool: asyncpg.Pool, tenant: str) -> dict[str, list[Any]]:
    """What the policy keeps of `tenant`: its spend, reservations, payouts, call outcomes and decisions."""
    q = {
        "spend": "SELECT task_id, amount_usd FROM policy.spend WHERE tenant_id = $1 ORDER BY task_id",
        "reservations": "SELECT action_id, status, amount_usd, settled_usd FROM policy.reservations WHERE tenant_id = $1 ORDER BY 1",
        "payouts": "SELECT action_id, payee, amount_usd FROM policy.payouts WHERE tenant_id = $1 ORDER BY action_id",
        "outcomes": "SELECT action_id, status, attempts FROM policy.call_outcomes WHERE tenant_id = $1 ORDER BY action_id",
        "decisions": "SELECT key, outcome, decided_event, authorized_event FROM policy.decisions WHERE tenant_id = $1 ORDER BY key",
    }
    return {name: [tuple(r) for r in await pool.fetch(sql, tenant)] for name, sql in q.items()}


def _result(kind: type[Any], proposal: Any, status: str, cost_usd: float) -> Any:
    d = proposal.data
    data = ActionResultData(
        action_id=d.action_id, task_id=d.task_id, tenant_id=d.tenant_id, tool=d.tool, status=status, attempts=1, duration_ms=3.0,
        cost=ResultCost(usd=cost_usd),
    )  # fmt: skip
    return kind.build(data, source="tidegate/executor")


async def _decided(kit: KitSettings, collector: Collector, producer: Producer, wait_for: Any, proposal: Any) -> Any:
    await producer.send("actions.proposed", proposal)
    found = await wait_for(lambda: collector.decided(proposal.data.action_id), what=f"the decision of {proposal.data.action_id}")
    return found[-1]


async def _spent_near_the_cap(
    kit: KitSettings, collector: Collector, producer: Producer, pool: asyncpg.Pool, wait_for: Any, make_proposal: Any
) -> tuple[str, list[Any]]:
    """A tenant with a spend cap; two refunds allowed, one of which fails (its budget given back), then a third allowed.

    The tenant has then spent 0.02 of its 0.025: a fourth refund is denied. Returns the tenant and the three proposals.
    """
    tenant = f"rst-{uuid.uuid4().hex[:8]}"
    settings = {"allow_autonomous": True, "refund_threshold_usd": 500, "budget_usd": CAP, "known_payees": ["cus_1002"]}
    await publish_tenant(kit, tenant=tenant, record=settings, set_by="ops@tidegate.example")
    svc = build(kit=kit)
    await svc.start()
    try:
        first, second, third = (make_proposal("issue_refund", REFUND | {"order_id": f"O-{i}"}, tenant=tenant) for i in (1, 2, 3))
        for p in (first, second):
            assert (await _decided(kit, collector, producer, wait_for, p)).data.outcome == "allow"
        await producer.send("actions.results", _result(ActionSucceeded, first, "succeeded", 0.01))
        await producer.send("actions.results", _result(ActionFailed, second, "failed", 0.0))

        async def ended() -> bool:
            return len((await _state(pool, tenant))["outcomes"]) == 2

        await wait_for(ended, what="both results recorded")
        assert (await _decided(kit, collector, producer, wait_for, third)).data.outcome == "allow"
    finally:
        await svc.stop()
    return tenant, [first, second, third]


async def test_a_restored_policy_refuses_to_start_then_catch_up_keeps_the_budget_spent(
    kit: KitSettings, collector: Collector, producer: Producer, pool: asyncpg.Pool, wait_for: Any, make_proposal: Any
) -> None:
    tenant, proposals = await _spent_near_the_cap(kit, collector, producer, pool, wait_for, make_proposal)
    before = await _state(pool, tenant)
    assert [float(a) for t, a in before["spend"] if t == "*"] == [0.02]
    await restored_before(pool, tenant)

    refused = build(kit=kit)
    with pytest.raises(BehindTheBus, match="behind the bus") as behind:
        await refused.start()
    await refused.stop()
    assert any(p.data.action_id in str(behind.value) for p in proposals)  # a decision the database lacks, named
    assert "restored from a backup?" in str(behind.value)
    assert "tidegate db catch-up" in str(behind.value)

    said: list[str] = []
    done = await catch_up(kit, say=said.append)
    assert done.counts["policy decisions recorded"] == 3
    read = [line.split(":")[0].strip() for line in said if line.endswith("records read")]
    assert sorted(set(read)) == sorted(read)  # each topic read once, though the executor's and the policy's steps both need it
    assert f"{kit.topic_prefix}actions.results" in read
    assert done.counts["policy results recorded"] == 2
    assert await _state(pool, tenant) == before  # the same rows: decisions as signed, reservations, spend, payouts, outcomes
    again = await catch_up(kit, say=said.append)  # idempotent: writes nothing
    assert (again.counts["policy decisions recorded"], again.counts["policy results recorded"]) == (0, 0)
    assert await _state(pool, tenant) == before

    svc = build(kit=kit)
    await svc.start()
    try:
        # The attacker's refund: the restore would have given the tenant its budget back; the caught-up spend does not.
        over = make_proposal("issue_refund", REFUND | {"order_id": "O-4"}, tenant=tenant)
        denied = await _decided(kit, collector, producer, wait_for, over)
        assert denied.data.outcome == "deny"
        assert [r.code.value for r in denied.data.reasons] == ["budget_exceeded"]
        assert denied.data.facts["spend_tenant_usd"] == 0.02
        # A proposal decided before the restore, delivered again: its recorded decision, published again, not a new one.
        first = proposals[0]
        await producer.send("actions.proposed", first)
        twice = await wait_for(lambda: collector.decided(first.data.action_id)[1:], what="the first decision published again")
        assert twice[0].id == collector.decided(first.data.action_id)[0].id
    finally:
        await svc.stop()


async def test_without_the_check_a_restored_policy_would_let_the_budget_be_spent_again(
    kit: KitSettings,
    collector: Collector,
    producer: Producer,
    pool: asyncpg.Pool,
    wait_for: Any,
    make_proposal: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hole the check closes, acting as the agent: on the restored database the same refund is allowed."""
    tenant, _ = await _spent_near_the_cap(kit, collector, producer, pool, wait_for, make_proposal)
    await restored_before(pool, tenant)

    async def unchecked(*args: Any, **kwargs: Any) -> None:
        return None

    monkeypatch.setattr("services.policy.app.check_not_behind", unchecked)
    svc = build(kit=kit)
    await svc.start()
    try:
        over = make_proposal("issue_refund", REFUND | {"order_id": "O-4"}, tenant=tenant)
        assert (await _decided(kit, collector, producer, wait_for, over)).data.outcome == "allow"
    finally:
        await svc.stop()


async def test_a_policy_process_behind_the_bus_exits_ex_config_with_a_not_started_line(
    kit: KitSettings,
    collector: Collector,
    producer: Producer,
    pool: asyncpg.Pool,
    wait_for: Any,
    make_proposal: Any,
    tmp_path: Path,
) -> None:
    tenant, _ = await _spent_near_the_cap(kit, collector, producer, pool, wait_for, make_proposal)
    await restored_before(pool, tenant)
    last = await refused_start(kit, "policy", tmp_path)
    assert last.startswith("policy: not started: the database is behind the bus")
    assert "tidegate db catch-up" in last


async def test_a_forged_decision_is_not_counted_by_the_check_and_stops_the_catch_up(
    kit: KitSettings, collector: Collector, producer: Producer, pool: asyncpg.Pool, wait_for: Any, make_proposal: Any, tmp_path: Path
) -> None:
    """Acting as someone who may write to `actions.decided` without the policy's key: a decision the database lacks, forged."""
    svc = build(kit=kit)
    await svc.start()
    try:
        genuine = await _decided(kit, collector, producer, wait_for, make_proposal("tag_ticket", {"ticket_id": "T-1", "tags": ["a"]}))
    finally:
        await svc.stop()
    forger = SigningKey.load_or_create(tmp_path / "forger", "policy")
    forged = genuine.model_copy(update={"id": f"ev-{uuid.uuid4().hex}", "data": genuine.data.model_copy(update={"action_id": "a-forged"})})
    await producer.send("actions.decided", sign_event(forged, forger))

    svc = build(kit=kit)
    await svc.start()  # the forged decision, last on its partition, is not the policy's: not counted
    await svc.stop()
    with pytest.raises(NotCaughtUp, match=r"actions\.decided"):
        await catch_up(kit, say=lambda _: None)
    # Stopped, it did not finish: every service refuses to start until one does (the operator removes the forged record,
    # or reads from after it with `--since`). The shared database of the tests must not stay marked.
    assert await unfinished_catch_up(pool, "policy") is not None
    await catch_up_finished(pool)


async def test_a_catch_up_cut_off_before_its_end_leaves_the_services_refusing_to_start(
    kit: KitSettings,
    collector: Collector,
    producer: Producer,
    pool: asyncpg.Pool,
    wait_for: Any,
    make_proposal: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """restore8 N1: a catch-up cut off after writing the lost decisions back (dated when written) and before the results
    ended their reservations left a database newer than the results it lacked; the policy started "all healthy" and
    released as never run reservations of calls that had run. Until a catch-up finishes, no service starts."""
    tenant, _ = await _spent_near_the_cap(kit, collector, producer, pool, wait_for, make_proposal)
    before = await _state(pool, tenant)
    await restored_before(pool, tenant)

    async def cut_off(self: Any, results: Any) -> None:
        raise ConnectionResetError("the operator's ssh session dropped")

    with monkeypatch.context() as patched:
        patched.setattr(PolicyRestoration, "results", cut_off)
        with pytest.raises(ConnectionResetError):
            await catch_up(kit, say=lambda _: None)
    # The results were published seconds before the decisions were written back; in a real restore, minutes or hours: a
    # window that starts at the written-back decisions' time leaves them out. So it does here, with no minute of skew.
    monkeypatch.setattr(bus_history, "CLOCK_SKEW_S", 0.0)
    try:
        assert (await _state(pool, tenant))["decisions"] == before["decisions"]  # the decisions are back, not what ended them
        assert (await _state(pool, tenant))["spend"] != before["spend"]
        for schema in SCHEMAS:
            assert await unfinished_catch_up(pool, schema) is not None
        refused = build(kit=kit)
        with pytest.raises(BehindTheBus, match="has not finished") as behind:
            await refused.start()
        await refused.stop()
        assert "run `tidegate db catch-up` again to its end" in str(behind.value)
        executor = build_executor(kit=kit)  # caught up by the same run before it was cut off: refused all the same
        with pytest.raises(BehindTheBus, match="has not finished"):
            await executor.start()
        await executor.stop()
    finally:
        done = await catch_up(kit, say=lambda _: None)  # never leave the shared database marked: every later start would refuse
    assert done.counts["policy results recorded"] == 2
    assert await _state(pool, tenant) == before
    svc = build(kit=kit)
    await svc.start()
    await svc.stop()
