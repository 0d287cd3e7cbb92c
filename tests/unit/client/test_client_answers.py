"""The client takes only its own call's answers: another tenant's, or another call's under the same action id, never.

Action ids are global: the first call the policy decides under one owns it, and the policy refuses any other
proposal of it (`action_id_reused`, dead-lettered where no client reads). Scripted governance on a memory bus
refuses the same way; these tests act as the tenant whose id was taken first, and as the one who took it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import pytest

from schemas import ActionDecided, ActionDecidedData, ActionResultData, ActionSucceeded, Reason, action_digest
from tidegate.client import ActionIdReused, ClientSettings, Escalated, Executed, MemoryTransport, Progress, SqliteProposals, Tidegate
from tidegate.client.scripted import ScriptedTidegate

SHARED = "shared-id-42"
GLOBEX_RESULT = {"po": "GLOBEX-PRIVATE-PO-1", "supplier_account": "acct-globex-7731"}


def rule(p: Any) -> tuple[str, str]:
    return ("escalate", "needs_human_approval") if p.args.get("quantity", 0) >= 100 else ("allow", "low_risk_write_allowed")


def reorder(args: dict[str, Any]) -> dict[str, Any]:
    return GLOBEX_RESULT if args["sku"].startswith("GLX") else {"po": f"PO-{args['sku']}"}


@pytest.fixture
def bus() -> MemoryTransport:
    return MemoryTransport()


@pytest.fixture
async def stack(bus: MemoryTransport) -> AsyncIterator[ScriptedTidegate]:
    async with ScriptedTidegate(bus, rule, tools={"reorder_stock": reorder}) as scripted:
        yield scripted


def tenant(name: str) -> ClientSettings:
    return ClientSettings(tenant=name, principal=f"agent@{name}.example", decision_timeout_s=5)


async def both_proposed(bus: MemoryTransport, stack: ScriptedTidegate, *proposals: Coroutine[Any, Any, Any]) -> list[Any]:
    """Each proposal sent in turn while governance is away, then decided in that order: the first takes the id."""
    waiting = []
    for number, proposal in enumerate(proposals, start=1):
        waiting.append(asyncio.create_task(proposal))
        while len(bus.topics["actions.proposed"]) < number:
            await asyncio.sleep(0.01)
    async with stack:
        return await asyncio.gather(*waiting, return_exceptions=True)


async def test_an_id_another_tenant_took_first_is_refused_never_answered_with_its_outcome(bus: MemoryTransport) -> None:
    stack = ScriptedTidegate(bus, rule, tools={"reorder_stock": reorder})
    async with Tidegate(tenant("acme"), transport=bus) as acme, Tidegate(tenant("globex"), transport=bus) as globex:
        taken, refused = await both_proposed(
            bus,
            stack,
            globex.propose("reorder_stock", {"sku": "GLX-1", "quantity": 3}, action_id=SHARED),
            acme.propose("reorder_stock", {"sku": "ACME-9", "quantity": 1}, action_id=SHARED),
        )
    assert isinstance(taken, Executed)
    assert taken.result == GLOBEX_RESULT
    assert isinstance(refused, ActionIdReused), refused
    assert refused.by_deployment
    assert "the policy refused this proposal as `action_id_reused`" in str(refused)
    assert [p.tenant_id for p in stack.refused] == ["acme"]
    assert stack.calls == {"reorder_stock": [{"sku": "GLX-1", "quantity": 3}]}


async def test_the_same_tenants_id_taken_by_another_call_is_refused_too(bus: MemoryTransport) -> None:
    """Another agent of the tenant (its own ledger) used the id for other args first: its result is not this call's."""
    stack = ScriptedTidegate(bus, rule, tools={"reorder_stock": reorder})
    async with Tidegate(tenant("acme"), transport=bus) as first, Tidegate(tenant("acme"), transport=bus) as second:
        taken, refused = await both_proposed(
            bus,
            stack,
            first.propose("reorder_stock", {"sku": "A-1", "quantity": 1}, action_id=SHARED),
            second.propose("reorder_stock", {"sku": "A-2", "quantity": 1}, action_id=SHARED),
        )
    assert isinstance(taken, Executed)
    assert isinstance(refused, ActionIdReused), refused
    assert stack.calls == {"reorder_stock": [{"sku": "A-1", "quantity": 1}]}


async def test_a_client_started_after_the_other_tenants_decision_times_out_saying_why_and_never_takes_its_result(
    bus: MemoryTransport, stack: ScriptedTidegate
) -> None:
    """The other tenant's decision came before this client's proposal: nothing it reads from then on says the id was taken."""
    async with Tidegate(tenant("globex"), transport=bus) as globex:
        escalated = await globex.propose("reorder_stock", {"sku": "GLX-1", "quantity": 300}, action_id=SHARED)
        assert isinstance(escalated, Escalated)
        async with Tidegate(tenant("acme"), transport=bus) as acme:
            with pytest.raises(TimeoutError, match=r"another call used this action id first.*action_id_reused"):
                await acme.propose("reorder_stock", {"sku": "ACME-9", "quantity": 1}, action_id=SHARED, timeout_s=0.3)
            await stack.approve(escalated.approval_id)  # globex's call runs, and its result is published under the id
            assert isinstance(await escalated.decision(timeout_s=5), Executed)
            recorded = acme.proposals.lookup(SHARED)
            assert recorded is not None
            with pytest.raises(TimeoutError, match="no conclusive answer"):  # from where acme's story starts: globex's result is not it
                await acme.resume(SHARED, position=recorded[0], timeout_s=0.3)
            with pytest.raises(ActionIdReused):  # from the beginning: globex's decision is there, so acme's was refused
                await acme.resume(SHARED, timeout_s=2)
    assert stack.calls == {"reorder_stock": [{"sku": "GLX-1", "quantity": 300}]}


async def test_resuming_an_id_this_client_never_proposed_reads_only_its_tenants_answers(
    bus: MemoryTransport, stack: ScriptedTidegate
) -> None:
    async with Tidegate(tenant("globex"), transport=bus) as globex:
        assert isinstance(await globex.propose("reorder_stock", {"sku": "GLX-1", "quantity": 3}, action_id=SHARED), Executed)
    async with Tidegate(tenant("acme"), transport=bus) as acme:
        with pytest.raises(ActionIdReused):  # globex's decision: the id is another tenant's
            await acme.resume(SHARED, timeout_s=2)
        assert isinstance(await acme.resume(SHARED, tenant="globex", timeout_s=2), Executed)  # a client acting for globex


async def test_a_restarted_client_matches_answers_to_the_call_it_recorded(bus: MemoryTransport, tmp_path: Path) -> None:
    """The digest of each proposal is kept with it: after a restart, another call's decision under the id is still not this one's."""
    stack = ScriptedTidegate(bus, rule, tools={"reorder_stock": reorder})  # its keys on the bus; it decides once entered
    async with Tidegate(tenant("acme"), transport=bus, proposals=SqliteProposals(tmp_path / "p.sqlite3")) as first:
        with pytest.raises(TimeoutError):
            await first.propose("reorder_stock", {"sku": "A-2", "quantity": 1}, action_id=SHARED, timeout_s=0.1)
    bus.topics["actions.proposed"].clear()  # that proposal never got through; another acme agent takes the id
    async with stack, Tidegate(tenant("acme"), transport=bus) as other:
        assert isinstance(await other.propose("reorder_stock", {"sku": "A-1", "quantity": 1}, action_id=SHARED), Executed)
        async with Tidegate(tenant("acme"), transport=bus, proposals=SqliteProposals(tmp_path / "p.sqlite3")) as again:
            with pytest.raises(ActionIdReused):
                await again.resume(SHARED, timeout_s=2)
    assert stack.calls == {"reorder_stock": [{"sku": "A-1", "quantity": 1}]}


def _decided(tenant_id: str, args: dict[str, Any]) -> ActionDecided:
    data = ActionDecidedData(
        action_id=SHARED,
        task_id="t-1",
        tenant_id=tenant_id,
        tool="reorder_stock",
        args=args,
        action_digest=action_digest(tenant_id, "reorder_stock", args),
        outcome="allow",
        reasons=[Reason(code="low_risk_write_allowed", policy_id="p")],
        policy_version="v",
        latency_ms=1.0,
    )
    return ActionDecided.build(data, source="tidegate/policy")


def _succeeded(tenant_id: str) -> ActionSucceeded:
    data = ActionResultData(
        action_id=SHARED, task_id="t-1", tenant_id=tenant_id, tool="reorder_stock", status="succeeded", result={"po": tenant_id},
        attempts=1, duration_ms=1.0, idempotency_key=SHARED,
    )  # fmt: skip
    return ActionSucceeded.build(data, source="tidegate/executor")


def test_a_result_read_before_the_decision_counts_only_once_this_calls_decision_is_seen() -> None:
    ours = {"sku": "A-1", "quantity": 1}
    progress = Progress(SHARED, tenant_id="acme", action_digest=action_digest("acme", "reorder_stock", ours))
    progress.apply("actions.results", _succeeded("acme"))  # Kafka gives no order across topics
    assert progress.final() is None
    progress.apply("actions.decided", _decided("acme", ours))
    final = progress.final()
    assert isinstance(final, Executed)
    assert final.result == {"po": "acme"}


@pytest.mark.parametrize(("tenant_id", "args"), [("globex", {"sku": "A-1", "quantity": 1}), ("acme", {"sku": "A-2", "quantity": 1})])
def test_a_decision_of_another_call_under_the_id_refuses_this_one_and_its_story_is_ignored(tenant_id: str, args: dict[str, Any]) -> None:
    ours = {"sku": "A-1", "quantity": 1}
    progress = Progress(SHARED, tenant_id="acme", action_digest=action_digest("acme", "reorder_stock", ours))
    assert progress.apply("actions.decided", _decided(tenant_id, args))
    progress.apply("actions.results", _succeeded(tenant_id))
    assert progress.refused
    assert progress.final() is None
    assert progress.decision is None


async def test_scripted_governance_keeps_the_step_of_each_call_as_the_services_do(bus: MemoryTransport) -> None:
    """A call proposed at step 3 is decided, granted and reported at step 3: tests on the stand-in see what production sends."""
    async with ScriptedTidegate(bus, rule, tools={"reorder_stock": reorder}) as stack, Tidegate(tenant("acme"), transport=bus) as acme:
        allowed = await acme.propose("reorder_stock", {"sku": "A-1", "quantity": 1}, step=3)
        waiting = asyncio.create_task(acme.propose("reorder_stock", {"sku": "A-2", "quantity": 500}, step=4, wait_for_human=True))
        while not stack.pending():
            await asyncio.sleep(0.01)
        await stack.approve(stack.pending()[0].approval_id)
        granted = await waiting
    assert isinstance(allowed, Executed)
    assert isinstance(granted, Executed)
    steps = {(e.data.action_id, e.data.step) for topic in ("actions.decided", "actions.results") for e in bus.topics[topic]}
    assert steps == {(allowed.action_id, 3), (granted.action_id, 4)}
