"""A service's sweep runs on its timer, and a round that fails is logged and tried again: it never stops the service."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest

from servicekit.runner import every


async def _run(interval_s: float, step: Callable[[], Awaitable[None]], *, at_start: bool, until: Callable[[], bool]) -> None:
    task = asyncio.create_task(every(interval_s, "test: sweeping", step, at_start=at_start))
    for _ in range(400):  # up to 2 s
        if until():
            break
        await asyncio.sleep(0.005)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_failing_round_is_logged_and_the_next_one_runs(caplog: pytest.LogCaptureFixture) -> None:
    rounds = 0

    async def step() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise RuntimeError("the database went away")

    await _run(0.01, step, at_start=True, until=lambda: rounds >= 3)
    assert rounds >= 3
    assert "test: sweeping failed; retrying in 0.0s" in caplog.text
    assert "the database went away" in caplog.text


@pytest.mark.parametrize(("at_start", "rounds_before_the_first_interval"), [(True, 1), (False, 0)])
async def test_the_first_round_runs_at_start_or_after_one_interval(at_start: bool, rounds_before_the_first_interval: int) -> None:
    rounds = 0

    async def step() -> None:
        nonlocal rounds
        rounds += 1

    await _run(3600, step, at_start=at_start, until=lambda: rounds > 0)  # an hour: only a round at start can run
    assert rounds == rounds_before_the_first_interval
