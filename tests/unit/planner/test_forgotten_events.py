"""The ids of applied events are forgotten once no bus keeps the events (`PlannerSettings.applied_events_kept_s`).

`planner.processed_events` grew by a row for every event the planner ever applied. Forgetting an id is
safe only if the event, were it delivered again anyway (a consumer group reset to the earliest offset
still kept), changes nothing: these tests redeliver a whole task's events after their ids are gone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import Envelope
from services.planner.repository import forget_applied
from systems.seed import TICKETS
from tidegate.demo.tickets import ticket_task

TICKET = {t.ticket_id: t for t in TICKETS}


async def run_to_the_end(harness: Any, ticket: str) -> list[Envelope]:
    """Submit the ticket's task, allow and succeed every step it proposes; every event the planner consumed, in order."""
    handled, ended = len(harness.proposals()), len(harness.outcomes())
    consumed: list[Envelope] = [await harness.submit(ticket_task(TICKET[ticket], task_id=f"t-{ticket}"))]
    while len(harness.proposals()) > handled:
        proposal = harness.proposals()[handled]
        handled += 1
        consumed.append(await harness.decide(proposal, "allow", "low_risk_write_allowed"))
        consumed.append(await harness.result(proposal))
    assert len(harness.outcomes()) == ended + 1  # the task ended
    return consumed


async def redeliver(harness: Any, events: list[Envelope]) -> None:
    handle = {"tasks": harness.handlers.on_task, "decided": harness.handlers.on_decided, "results": harness.handlers.on_result}
    for event in events:
        kind = "tasks" if event.type == "tidegate.task.submitted" else "decided" if event.type == "tidegate.action.decided" else "results"
        await handle[kind](event)


async def test_a_finished_tasks_events_delivered_again_after_their_ids_are_forgotten_change_nothing(harness: Any) -> None:
    consumed = await run_to_the_end(harness, "T-1007")
    published, state = list(harness.published), await harness.repo.get("acme", "t-T-1007")
    forgotten = await harness.repo.forget_applied_before(datetime.now(UTC) + timedelta(seconds=1))
    assert forgotten >= len(consumed)
    await redeliver(harness, consumed)
    assert harness.published == published  # nothing proposed again, no second outcome
    assert await harness.repo.get("acme", "t-T-1007") == state


async def test_only_the_ids_applied_before_the_cutoff_are_forgotten_at_most_limit_at_a_time(harness: Any) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    harness.repo.clock = lambda: now[0]
    old = await run_to_the_end(harness, "T-1007")
    now[0] += timedelta(days=20)
    recent = await run_to_the_end(harness, "T-1006")
    cutoff = now[0] - timedelta(days=15)
    assert await harness.repo.forget_applied_before(cutoff, limit=2) == 2
    assert await forget_applied(harness.repo, cutoff, batch=2) == len(old) - 2  # two at a time, until none is left
    assert await harness.repo.forget_applied_before(cutoff) == 0
    published = list(harness.published)
    await redeliver(harness, recent)  # still known: answered from what was stored, nothing new
    assert harness.published == published
