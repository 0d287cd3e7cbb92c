"""A task id is its tenant's, on the real planner, Kafka and PostgreSQL (security review 5, F4).

globex submits acme's next task id first: both tasks are planned and answered, each its tenant's. Within acme, mallory
submitting agent's id with another request is dead-lettered `task_id_reused` (agent's task runs on); the same
submission delivered again changes nothing. The planner's login copying acme's sealed state over globex's task of the
same id proves nothing.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from planner_helpers import StandIn

from schemas import TaskSubmitted, utcnow
from servicekit import KitSettings, SigningKey, create_pool
from servicekit.dbroles import service_database_url
from services.planner import domain
from services.planner.action_ids import ActionIds
from services.planner.app import build
from services.planner.repository import PostgresTaskRepository
from services.planner.state_seal import StateSeal
from services.planner.task_state import CostRates, PlannedStep
from systems.seed import TICKETS
from tidegate.demo.tickets import ticket_task

TICKET = {t.ticket_id: t for t in TICKETS}


def _allow(p: Any) -> tuple[str, str]:
    return "allow", "low_risk_write_allowed"


def _outcome(collector: Any, tenant: str, task_id: str) -> Any:
    return next((e for e in collector.events["tasks.outcomes"] if (e.data.tenant_id, e.data.task_id) == (tenant, task_id)), None)


def _proposals(collector: Any, tenant: str, task_id: str) -> list[Any]:
    return [p for p in collector.proposals(task_id) if p.tenant_id == tenant]


async def test_another_tenants_task_of_the_same_id_is_another_task(kit, producer, collector, wait_for) -> None:
    svc = build(kit)
    await svc.start()
    standin = StandIn(kit, producer, _allow)
    await standin.start()
    squatted = f"squat-T1001-{uuid.uuid4().hex[:6]}"
    try:
        theirs = ticket_task(TICKET["T-1003"], tenant_id="globex", task_id=squatted, requested_by="agent@globex.example")
        await producer.send("tasks", TaskSubmitted.build(theirs, source="tests"))
        await wait_for(lambda: _proposals(collector, "globex", squatted) or None, timeout=30, what="globex's first proposal")
        ours = ticket_task(TICKET["T-1007"], tenant_id="acme", task_id=squatted, requested_by="agent@acme.example")
        await producer.send("tasks", TaskSubmitted.build(ours, source="tests"))
        outcome = await wait_for(lambda: _outcome(collector, "acme", squatted), timeout=40, what="acme's outcome")
        assert outcome.type == "tidegate.task.completed"
        assert {p.args.get("ticket_id") for p in _proposals(collector, "acme", squatted)} <= {"T-1007", None}
        assert await wait_for(lambda: _outcome(collector, "globex", squatted), timeout=40, what="globex's outcome")
        conn = await asyncpg.connect(kit.database_url)
        try:
            rows = await conn.fetch(
                "SELECT tenant_id, state->>'requested_by' AS requested_by, status FROM planner.tasks WHERE task_id = $1 ORDER BY 1",
                squatted,
            )
            steps = await conn.fetch("SELECT DISTINCT tenant_id FROM planner.steps WHERE task_id = $1 ORDER BY 1", squatted)
        finally:
            await conn.close()
        assert [tuple(r) for r in rows] == [
            ("acme", "agent@acme.example", "completed"),
            ("globex", "agent@globex.example", "completed"),
        ]
        assert [r["tenant_id"] for r in steps] == ["acme", "globex"]
    finally:
        await standin.stop()
        await svc.stop()


async def test_another_requesters_submission_of_a_taken_id_is_dead_lettered(kit, producer, collector, wait_for) -> None:
    svc = build(kit)
    await svc.start()
    task_id = f"squat2-{uuid.uuid4().hex[:6]}"
    try:
        agent = ticket_task(TICKET["T-1007"], tenant_id="acme", task_id=task_id, requested_by="agent@acme.example")
        submitted = TaskSubmitted.build(agent, source="tests")
        await producer.send("tasks", submitted)
        [first] = await wait_for(lambda: _proposals(collector, "acme", task_id) or None, timeout=30, what="agent's first proposal")
        await producer.send("tasks", submitted)  # agent's submission delivered again: the same event, applied already
        mallory = ticket_task(TICKET["T-1003"], tenant_id="acme", task_id=task_id, requested_by="mallory@acme.example")
        await producer.send("tasks", TaskSubmitted.build(mallory, source="tests"))  # after it, on the same partition (key: the task id)

        def refused() -> list[Any]:
            return [d for d in collector.events["deadletter"] if d.data.task_id == task_id]

        [dead] = await wait_for(lambda: refused() or None, timeout=30, what="mallory's submission dead-lettered")
        await svc.bus.wait_caught_up("tasks")
        assert (dead.data.code, dead.data.service, dead.data.tenant_id) == ("task_id_reused", "planner", "acme")
        assert "mallory@acme.example" in dead.data.raw_value
        assert "agent@acme.example submitted it first" in dead.data.error
        assert len(refused()) == 1  # the redelivery of agent's own submission, handled before mallory's, is not refused
        assert _proposals(collector, "acme", task_id) == [first]  # nothing planned for mallory, nothing again for agent
    finally:
        await svc.stop()


with tempfile.TemporaryDirectory() as _keys:  # the planner's key: its current key is known without the folder
    SEAL = StateSeal(SigningKey.load_or_create(Path(_keys), "planner"), Path(_keys))


@pytest.fixture
async def login(kit: KitSettings) -> AsyncIterator[asyncpg.Pool]:
    """The planner's own database login: the service's, and the attacker's."""
    pool = await create_pool(service_database_url(kit, "planner"), max_size=2)
    yield pool
    await pool.close()


async def test_a_tenants_sealed_state_copied_over_anothers_task_of_the_same_id_is_refused(login: asyncpg.Pool) -> None:
    repo = PostgresTaskRepository(login, CostRates(), seal=SEAL)
    task_id = f"squat-seal-{uuid.uuid4().hex[:6]}"
    ids = ActionIds(b"task-ids-test".ljust(32, b"."))
    for tenant in ("acme", "globex"):
        task = ticket_task(TICKET["T-1007"], tenant_id=tenant, task_id=task_id, requested_by=f"agent@{tenant}.example")
        steps = [PlannedStep(tool="get_ticket", args={"ticket_id": tenant})]

        def start(state: Any, task: Any = task, steps: Any = steps) -> Any:
            return domain.start_task(task, steps, strategy="playbook", now=utcnow(), rates=CostRates(), read_only=frozenset(), ids=ids)

        pending = await repo.apply(f"ev-{tenant}-{task_id}", tenant, task_id, start)
        await repo.published([p.outbox_id for p in pending])  # as if published: no test reads an outbox this one left
    status = await login.execute(  # the attacker: acme's genuine state and proof over globex's row of the same task id
        "UPDATE planner.tasks t SET state = o.state, state_key_id = o.state_key_id, state_signature = o.state_signature "
        "FROM planner.tasks o WHERE t.task_id = $1 AND o.task_id = $1 AND t.tenant_id = 'globex' AND o.tenant_id = 'acme'",
        task_id,
    )
    assert status == "UPDATE 1"
    fresh = PostgresTaskRepository(login, CostRates(), seal=SEAL)  # a cache miss: the state is read and its proof checked
    assert await fresh.get("globex", task_id) is None  # refused
    assert (await fresh.get("acme", task_id)).plan == []  # type: ignore[union-attr]  # acme's own still proves (its step proposed)
