"""A polled batch of decisions and results on the real bus and database: one write per batch, nothing lost, a bad one refused alone."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from approval_harness import ApprovalHarness, StartApproval, read_topic
from signers import SigningBus
from statements import Statements, counting_pool

from schemas import ActionDecided, ActionFailed, ActionResult, ActionResultData, ActionSucceeded, Envelope, UndoPlan
from servicekit import EventOutlet, KitSettings, SigningKey
from servicekit.dbroles import service_database_url
from services.approval._undo_store import PgUndoResults
from services.approval.domain import GroupsConfig
from services.approval.repository import PgApprovalRepository
from services.approval.service import ApprovalService
from services.approval.settings import ApprovalSettings


@pytest.fixture
async def counted(
    kit: KitSettings, start_approval: StartApproval, tmp_path: Path
) -> AsyncIterator[tuple[ApprovalService, Statements, ApprovalHarness]]:
    """The approval service's use cases on its PostgreSQL stores, over one connection whose statements are counted."""
    h = await start_approval()  # its start-up checks the schema is migrated
    statements = Statements()

    # as the service's pool: it leaves no session state (`pool_of`)
    pool = await counting_pool(service_database_url(kit, "approval"), statements, max_size=1, reset_session=False)
    published: list[tuple[str, Envelope]] = []

    class Published:
        async def publish(self, topic: str, event: Envelope) -> None:
            published.append((topic, event))

    service = ApprovalService(
        repo=PgApprovalRepository(pool, "approval"),
        publisher=EventOutlet(Published().publish),
        key=SigningKey.load_or_create(tmp_path, "approval"),
        groups=GroupsConfig(),
        settings=ApprovalSettings(),
        undo_results=PgUndoResults(pool, "approval"),
    )
    try:
        yield service, statements, h
    finally:
        await pool.close()


def decision(h: ApprovalHarness, outcome: str, **over: Any) -> ActionDecided:
    allowed: dict[str, Any] = {"reasons": []} if outcome == "allow" else {}
    data = h.decided(outcome=outcome, **allowed | over)
    return ActionDecided.build(data, source="tidegate/policy")


def result(tenant: str, status: str, undo: UndoPlan | None = None) -> ActionResult:
    data = ActionResultData(
        action_id=f"a-{uuid.uuid4().hex[:10]}", task_id="t-batch", tenant_id=tenant, step=1, tool="tag_ticket",
        status=status, attempts=1, duration_ms=2, undo=undo,
    )  # fmt: skip
    built: ActionResult = (ActionSucceeded if status == "succeeded" else ActionFailed).build(data, source="tidegate/executor")
    return built


async def test_a_batch_of_decisions_that_need_no_human_is_one_statement(
    counted: tuple[ApprovalService, Statements, ApprovalHarness],
) -> None:
    service, statements, h = counted
    events = [decision(h, "allow") for _ in range(20)] + [decision(h, "deny") for _ in range(5)]
    await service.on_decided_batch(events)
    assert len(statements.sent) == 1
    for event in events:
        seen = await service.repo.task_events(h.tenant, event.data.task_id)
        assert [(e.event_id, e.outcome) for e in seen] == [(event.id, event.data.outcome)]
    assert await service.repo.search(tenant_id=h.tenant, status=None) == []  # none of them asks a human


async def test_a_batch_of_results_is_one_statement_and_one_more_for_the_undoable(
    counted: tuple[ApprovalService, Statements, ApprovalHarness],
) -> None:
    service, statements, h = counted
    tenant = h.tenant
    ready = UndoPlan(status="ready", tool="untag_ticket", args={"ticket_id": "T-1", "tags": ["refund"]})
    undoable = [result(tenant, "succeeded", ready) for _ in range(10)]
    others = [result(tenant, "succeeded") for _ in range(5)] + [result(tenant, "failed") for _ in range(5)]
    await service.on_result_batch(undoable + others)
    assert len(statements.sent) == 2
    assert len(await service.repo.task_events(tenant, "t-batch")) == 20
    for event in undoable:
        kept = await service.undo_results.get(event.data.action_id)
        assert kept is not None
        assert kept.result.undo == ready
    assert [await service.undo_results.get(e.data.action_id) for e in others] == [None] * 10

    statements.sent.clear()
    await service.on_result_batch(undoable + others)  # a redelivered batch: nothing twice, nothing refused
    assert len(statements.sent) == 2
    assert len(await service.repo.task_events(tenant, "t-batch")) == 20


async def test_one_reused_action_id_in_a_burst_is_dead_lettered_alone_and_the_rest_is_kept(
    kit: KitSettings, start_approval: StartApproval, wait_for: Any
) -> None:
    """Published before the service starts, so that its first poll holds them all: the batch falls back to one event at a time."""
    bus = SigningBus(kit, "approval-test")
    await bus.producer.start()
    try:
        first = ApprovalHarness(proc=None, kit=kit, bus=bus)  # type: ignore[arg-type]
        other = ApprovalHarness(proc=None, kit=kit, bus=bus)  # type: ignore[arg-type]
        allowed = [decision(first, "allow") for _ in range(10)]
        mine = decision(first, "escalate")
        theirs = decision(other, "escalate", action_id=mine.data.action_id)  # another tenant, the same action id
        for event in [*allowed[:5], mine, theirs, *allowed[5:]]:
            await bus.publish("actions.decided", event)
    finally:
        await bus.producer.stop()
    h = await start_approval()

    async def dead_letters() -> list[Any] | None:
        found = [d for d in await read_topic(kit.kafka_bootstrap, h.bus.topic("deadletter"), "deadletter") if d.data.service == "approval"]
        return found or None

    (dead,) = await wait_for(dead_letters, what="the reused action id's dead letter")
    assert dead.data.code == "action_id_reused"
    requests = [await h.repo.get_by_action(mine.data.action_id, tenant_id=e.data.tenant_id) for e in (mine, theirs)]
    assert len([r for r in requests if r is not None]) == 1  # the first one seen holds the action id; the other is refused
    for event in allowed:
        seen = await wait_for(lambda e=event: h.repo.task_events(first.tenant, e.data.task_id), what="an allowed decision kept")
        assert [e.event_id for e in seen] == [event.id]
    assert len(await dead_letters() or []) == 1
