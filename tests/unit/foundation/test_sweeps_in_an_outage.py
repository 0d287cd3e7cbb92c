"""A sweep that meets the database down while the service has said its outage: one outage line, not a traceback a round.

SRE probe F5: the planner's step-timeout sweep logged an ERROR with a traceback every 30 s through a PostgreSQL outage, the
approval's sweeps a line every second, beside the service's own line that said the outage once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg
import pytest

from servicekit.db_outage import DatabaseWatch
from servicekit.runner import every


async def _rounds(caplog: pytest.LogCaptureFixture, error: BaseException) -> list[logging.LogRecord]:
    rounds = 0

    async def step() -> None:
        nonlocal rounds
        rounds += 1
        raise error

    task = asyncio.create_task(every(0.01, "planner: step-timeout sweep", step, at_start=True))
    while rounds < 3:
        await asyncio.sleep(0.005)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return [r for r in caplog.records if "step-timeout sweep failed" in r.getMessage()]


async def test_a_sweep_that_meets_the_database_down_in_a_said_outage_is_not_an_error_a_round(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    watch = DatabaseWatch("planner", pool=object(), where="127.0.0.1:5432/tidegate")  # type: ignore[arg-type]
    watch.down_since = time.monotonic()  # its outage line was written
    try:
        lines = await _rounds(caplog, asyncpg.CannotConnectNowError("the database system is shutting down"))
        assert lines
        assert {r.levelno for r in lines} == {logging.DEBUG}
        assert not any(r.exc_info for r in lines)
        caplog.clear()
        other = await _rounds(caplog, ValueError("a bug in the sweep"))  # anything else is still an error, with its traceback
        assert {r.levelno for r in other} == {logging.ERROR}
        assert all(r.exc_info for r in other)
    finally:
        watch.down_since = None
        await watch.close()
