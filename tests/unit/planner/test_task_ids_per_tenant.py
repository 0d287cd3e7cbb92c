"""A task id is its tenant's (security review 5, F4): another tenant's task of the same id is another task, and a second
request under an id the tenant already runs is refused `task_id_reused`, never swallowed.

Before, the planner kept tasks by id alone: globex submitting `squat-T1001` first left acme's `squat-T1001` unplanned
and unanswered, and within acme mallory's submission of agent's id silently won (or silently lost).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas import TaskSubmitted, TaskSubmittedData
from servicekit import EventOutlet, Reject, ToolCatalog
from services.planner.handlers import PlannerHandlers
from services.planner.repository import InMemoryTaskRepository
from services.planner.strategies import PlaybookStrategy
from services.planner.task_state import StepTimeouts, TaskState
from systems.seed import TICKETS
from tidegate.demo.tickets import ticket_task

TICKET = {t.ticket_id: t for t in TICKETS}
SQUATTED = "squat-T1001"


def task(tenant: str, requested_by: str, ticket: str = "T-1007", task_id: str = SQUATTED) -> TaskSubmittedData:
    return ticket_task(TICKET[ticket], tenant_id=tenant, task_id=task_id, requested_by=requested_by)


def of(harness: Any, tenant: str) -> list[Any]:
    return [p for p in harness.proposals() if p.tenant_id == tenant]


async def test_another_tenant_submitting_the_id_first_leaves_each_tenant_its_own_task(harness: Any) -> None:
    await harness.submit(task("globex", "agent@globex.example", ticket="T-1003"))  # the squatter, first
    await harness.submit(task("acme", "agent@acme.example"))
    [theirs], [ours] = of(harness, "globex"), of(harness, "acme")
    assert ours.task_id == theirs.task_id == SQUATTED
    assert ours.requested_by == "agent@acme.example"
    assert ours.args["ticket_id"] == "T-1007"  # acme's own input, not globex's
    assert ours.action_id != theirs.action_id
    acme, globex = await harness.repo.get("acme", SQUATTED), await harness.repo.get("globex", SQUATTED)
    assert (acme.tenant_id, acme.requested_by, globex.tenant_id) == ("acme", "agent@acme.example", "globex")
    # Each tenant's events move its own task only, to its own outcome.
    while not any(o.data.tenant_id == "acme" for o in harness.outcomes()):
        await harness.run_allowed(of(harness, "acme")[-1])
    [outcome] = harness.outcomes()
    assert (outcome.data.tenant_id, outcome.data.status) == ("acme", "completed")
    assert len(of(harness, "globex")) == 1
    assert (await harness.repo.get("globex", SQUATTED)).status == "running"


@pytest.mark.parametrize("first", ["mallory", "agent"])
async def test_another_requester_of_the_tenant_taking_an_id_is_refused_visibly(harness: Any, first: str) -> None:
    people = {"mallory": task("acme", "mallory@acme.example", ticket="T-1003"), "agent": task("acme", "agent@acme.example")}
    second = "agent" if first == "mallory" else "mallory"
    await harness.submit(people[first])
    before = list(harness.published)
    with pytest.raises(Reject) as refused:  # the bus dead-letters a `Reject` with its code, and logs it
        await harness.submit(people[second])
    assert refused.value.code == "task_id_reused"
    assert f"{people[first].requested_by} submitted it first" in refused.value.message
    assert harness.published == before  # nothing proposed for the second
    state = await harness.repo.get("acme", SQUATTED)
    assert state.requested_by == people[first].requested_by


async def test_the_same_requester_with_another_request_is_refused_and_the_same_one_again_is_idempotent(harness: Any) -> None:
    original = task("acme", "agent@acme.example")
    event = await harness.submit(original)
    before = list(harness.published)
    await harness.handlers.on_task(event)  # redelivered
    await harness.submit(original)  # the same request sent again (a new event id)
    assert harness.published == before
    for changed in ({"mode": "draft"}, {"input": {**original.input, "amount_usd": 999}}):
        with pytest.raises(Reject) as refused:
            await harness.submit(original.model_copy(update=changed))
        assert refused.value.code == "task_id_reused"
        assert "with another request" in refused.value.message
    assert harness.published == before


async def test_a_state_kept_before_requests_were_digested_is_compared_by_requester(harness: Any) -> None:
    original = task("acme", "agent@acme.example")
    await harness.submit(original)
    state: TaskState = harness.repo.tasks[("acme", SQUATTED)]
    harness.repo.tasks[("acme", SQUATTED)] = state.model_copy(update={"submission": None})
    before = list(harness.published)
    await harness.submit(original.model_copy(update={"mode": "draft"}))  # nothing to compare the request with
    assert harness.published == before
    with pytest.raises(Reject):
        await harness.submit(task("acme", "mallory@acme.example"))


class _StaleRead(InMemoryTaskRepository):
    """A read that misses a submission applied meanwhile (another copy of the planner applied it)."""

    async def get(self, tenant_id: str, task_id: str) -> TaskState | None:
        return None


async def test_a_submission_applied_between_the_read_and_the_write_is_refused_too(catalog: ToolCatalog, harness: Any) -> None:
    repo = _StaleRead()
    harness.handlers.repo = repo
    await harness.handlers.on_task(TaskSubmitted.build(task("acme", "agent@acme.example"), source="test"))
    with pytest.raises(Reject) as refused:
        await harness.handlers.on_task(TaskSubmitted.build(task("acme", "mallory@acme.example"), source="test"))
    assert refused.value.code == "task_id_reused"
    assert repo.tasks[("acme", SQUATTED)].requested_by == "agent@acme.example"


async def test_the_step_timeout_sweep_closes_each_tenants_task_of_one_id(harness: Any, catalog: ToolCatalog) -> None:
    t0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    now = [t0]
    harness.handlers = PlannerHandlers(
        repo=harness.repo,
        strategy=PlaybookStrategy(catalog),
        out=EventOutlet(harness._publish),
        rates=harness.handlers.rates,
        read_only=harness.handlers.read_only,
        ids=harness.handlers.ids,
        clock=lambda: now[0],
        timeouts=StepTimeouts(default_s=60),
    )
    await harness.submit(task("globex", "agent@globex.example", ticket="T-1003"))
    await harness.submit(task("acme", "agent@acme.example"))
    now[0] = t0 + timedelta(seconds=61)
    await harness.handlers.on_tick()
    outcomes = {o.data.tenant_id: o.data.reason for o in harness.outcomes()}
    assert outcomes == {"acme": "step_timeout", "globex": "step_timeout"}
    applied = sorted(e for e in harness.repo.processed if e.startswith("step-timeout:"))
    assert applied == ['step-timeout:["acme", "squat-T1001", 1]', 'step-timeout:["globex", "squat-T1001", 1]']
