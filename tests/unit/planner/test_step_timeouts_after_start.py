"""A step that waited since before the planner started (a restart, a restored backup) waits its full timeout from the start.

After a restore the planner reads again the answers published since the backup (`services/planner/restored.py`); its
step-timeout sweep must not fail a task from the backup's old `waiting_since` before those answers are read.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from services.planner.handlers import PlannerHandlers
from services.planner.task_state import StepTimeouts
from systems.seed import TICKETS
from tidegate.demo.tickets import ticket_task

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _planner(harness: Any, now: list[datetime]) -> PlannerHandlers:
    """A planner process over the harness's tasks, started at `now[0]`, tag_ticket allowed 60 s."""
    return dataclasses.replace(harness.handlers, clock=lambda: now[0], timeouts=StepTimeouts(default_s=600, by_tool={"tag_ticket": 60}))


async def test_a_step_proposed_before_the_start_waits_its_timeout_from_the_start(harness: Any) -> None:
    now = [T0]
    harness.handlers = _planner(harness, now)
    await harness.submit(ticket_task(next(t for t in TICKETS if t.ticket_id == "T-1007"), task_id="t-restored"))
    assert harness.last().tool == "tag_ticket"  # proposed at T0, then the process stops (or the backup is taken)

    now[0] = T0 + timedelta(hours=8)  # started again eight hours later (a restored backup of last night)
    harness.handlers = _planner(harness, now)
    await harness.handlers.on_tick()
    assert harness.outcomes() == []  # not failed at once: the answers published since are read first
    now[0] += timedelta(seconds=59)
    await harness.handlers.on_tick()
    assert harness.outcomes() == []
    now[0] += timedelta(seconds=2)  # 61 s after the start with still no answer: it fails as before
    await harness.handlers.on_tick()
    [outcome] = harness.outcomes()
    assert outcome.data.reason == "step_timeout"
    assert "tag_ticket got no decision in 60 s" in outcome.data.summary
