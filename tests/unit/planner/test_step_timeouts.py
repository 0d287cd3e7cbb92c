"""A task whose action never gets an answer is closed `step_timeout` after its risk class's wait, once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas import TaskSubmittedData
from servicekit import EventOutlet, ToolCatalog
from services.planner.handlers import PlannerHandlers
from services.planner.strategies import PlaybookStrategy
from services.planner.task_state import StepTimeouts
from systems.seed import TICKETS
from tidegate.demo.tickets import ticket_task

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
TICKET = {t.ticket_id: t for t in TICKETS}


@pytest.fixture
def timed(harness: Any, catalog: ToolCatalog) -> tuple[Any, list[datetime]]:
    """The planner harness with a clock the test moves, tag_ticket allowed 60 s and everything else 600 s."""
    now = [T0]
    harness.handlers = PlannerHandlers(
        repo=harness.repo,
        strategy=PlaybookStrategy(catalog),
        out=EventOutlet(harness._publish),
        rates=harness.handlers.rates,
        read_only=harness.handlers.read_only,
        ids=harness.handlers.ids,
        clock=lambda: now[0],
        timeouts=StepTimeouts(default_s=600, by_tool={"tag_ticket": 60}),
    )
    return harness, now


def task(ticket_id: str) -> TaskSubmittedData:
    return ticket_task(TICKET[ticket_id], task_id=f"t-{ticket_id}")


async def test_a_step_without_a_decision_fails_its_task_after_its_timeout(timed: Any) -> None:
    harness, now = timed
    await harness.submit(task("T-1007"))
    assert harness.last().tool == "tag_ticket"
    now[0] = T0 + timedelta(seconds=59)
    await harness.handlers.on_tick()
    assert harness.outcomes() == []  # not yet
    now[0] = T0 + timedelta(seconds=61)
    await harness.handlers.on_tick()
    [outcome] = harness.outcomes()
    assert outcome.type == "tidegate.task.failed"
    assert outcome.data.reason == "step_timeout"
    assert "tag_ticket got no decision in 60 s" in outcome.data.summary
    state = await harness.repo.get("acme", "t-T-1007")
    assert (state.status, state.steps[-1].status, state.steps[-1].reasons) == ("failed", "timed_out", ["step_timeout"])
    # A second tick (another copy of the service) and a late answer change nothing.
    await harness.handlers.on_tick()
    await harness.run_allowed(harness.proposals()[0])
    assert len(harness.outcomes()) == 1
    assert len(harness.proposals()) == 1


async def test_an_allowed_step_without_a_result_fails_and_says_it_may_have_run(timed: Any) -> None:
    harness, now = timed
    await harness.submit(task("T-1007"))
    now[0] = T0 + timedelta(seconds=50)
    await harness.decide(harness.last(), "allow", "low_risk_write_allowed")
    now[0] = T0 + timedelta(seconds=100)  # 100 s since proposed, 50 s since allowed: the wait restarts at each answer
    await harness.handlers.on_tick()
    assert harness.outcomes() == []
    now[0] = T0 + timedelta(seconds=111)
    await harness.handlers.on_tick()
    [outcome] = harness.outcomes()
    assert outcome.data.reason == "step_timeout"
    assert "got no result in 60 s; it may or may not have run" in outcome.data.summary


async def test_a_step_waiting_for_a_human_is_left_to_the_approval_expiry(timed: Any) -> None:
    harness, now = timed
    await harness.submit(task("T-1002"))  # the over-threshold refund escalates
    while harness.last().tool != "issue_refund":
        await harness.run_allowed(harness.last())
    refund = harness.last()
    await harness.decide(refund, "escalate", "needs_human_approval")
    now[0] = T0 + timedelta(days=2)
    await harness.handlers.on_tick()
    assert harness.outcomes() == []
    await harness.approval(refund, "granted", ["fin@acme.example"])  # now the policy's re-decision is due
    now[0] += timedelta(seconds=601)
    await harness.handlers.on_tick()
    [outcome] = harness.outcomes()
    assert outcome.data.reason == "step_timeout"
    assert "issue_refund got no decision in 600 s" in outcome.data.summary


async def test_a_task_that_moves_on_is_never_timed_out(timed: Any) -> None:
    harness, now = timed
    await harness.submit(task("T-1007"))
    for _ in range(3):
        now[0] += timedelta(seconds=40)
        await harness.run_allowed(harness.last())
        await harness.handlers.on_tick()
    [outcome] = harness.outcomes()
    assert outcome.type == "tidegate.task.completed"


async def test_an_outcome_a_tick_could_not_publish_is_published_by_the_next(timed: Any) -> None:
    harness, now = timed
    await harness.submit(task("T-1007"))
    publish, failing = harness._publish, [True]

    async def flaky(topic: str, event: Any) -> None:
        if failing and topic == "tasks.outcomes":
            failing.clear()
            raise ConnectionError("the bus stopped")
        await publish(topic, event)

    harness.handlers.out = EventOutlet(flaky)
    now[0] = T0 + timedelta(seconds=61)
    with pytest.raises(ConnectionError):
        await harness.handlers.on_tick()
    assert harness.outcomes() == []
    await harness.handlers.on_tick()  # no bus redelivers a tick: the stored outcome is published from the outbox
    [outcome] = harness.outcomes()
    assert outcome.data.reason == "step_timeout"
    await harness.handlers.on_tick()
    assert len(harness.outcomes()) == 1
