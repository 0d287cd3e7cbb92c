"""`tidegate up` restarts a dead service after a delay that doubles on quick deaths and resets after a healthy run."""

from __future__ import annotations

import asyncio
import itertools
import sys
from pathlib import Path

import pytest

from tidegate.commands.services import Backoff, _supervise


def test_the_delay_doubles_on_quick_deaths_up_to_the_maximum() -> None:
    backoff = Backoff(initial_s=1, max_s=8, healthy_s=60)
    assert [backoff.after_death(ran_s=2) for _ in range(6)] == [1, 2, 4, 8, 8, 8]


def test_a_healthy_run_resets_the_delay() -> None:
    backoff = Backoff(initial_s=1, max_s=30, healthy_s=60)
    assert [backoff.after_death(ran_s=1) for _ in range(4)] == [1, 2, 4, 8]
    assert backoff.after_death(ran_s=60) == 1  # ran an hour's minute: the crash is news, not a loop
    assert backoff.after_death(ran_s=1) == 2
    assert backoff.after_death(ran_s=59.9) == 4


async def run_supervisor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: object, restarts: int) -> list[float]:
    """Supervise one child that always exits at once, until it has been restarted `restarts` times; the delays chosen."""
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    delays: list[float] = []
    stopping = asyncio.Event()

    def on_restart(name: str, code: int | None, delay: float | None) -> None:
        assert (name, code) == ("policy", 3)
        delays.append(delay)
        if len(delays) >= restarts:
            stopping.set()

    await asyncio.wait_for(
        _supervise(
            ("policy",),
            make_backoff=lambda: Backoff(initial_s=0.02, max_s=0.08, healthy_s=60),
            command=lambda name: [sys.executable, "-c", "import sys; sys.exit(3)"],
            clock=clock,  # type: ignore[arg-type]
            stopping=stopping,
            on_restart=on_restart,
        ),
        timeout=20,
    )
    return delays


async def test_the_supervisor_backs_off_a_child_that_keeps_dying(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    assert await run_supervisor(tmp_path, monkeypatch, time.monotonic, 5) == [0.02, 0.04, 0.08, 0.08, 0.08]


async def test_the_supervisor_resets_the_delay_of_a_child_that_ran_long(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = itertools.count(step=100.0)  # every reading is 100 s after the last: each child "ran" past healthy_s
    assert await run_supervisor(tmp_path, monkeypatch, lambda: next(ticks), 4) == [0.02, 0.02, 0.02, 0.02]
