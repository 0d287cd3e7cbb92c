"""A service's HTTP server at idle turns once a second, not ten times, and still answers, dates its answers and stops at once.

uvicorn's own loop slept 100 ms between turns: ten wake-ups a second of the approval service with nothing to do, the most
of any source once its consumers stopped waking on a timer (docs/benchmarks.md, 2026-12-07). Loopback HTTP only.
"""

from __future__ import annotations

import asyncio
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from fake_producer import KeepingProducer
from fastapi import FastAPI

from servicekit import Bus, ServiceProcess

WATCHED_S = 3.0


class Nowhere(KeepingProducer):
    """A producer that neither connects nor disconnects: this service consumes nothing."""

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def serving() -> ServiceProcess:
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, bool]:
        return {"ok": True}

    return ServiceProcess(name="approval", bus=Bus(Nowhere(), "approval", "unused:1", "p."), http_app=app, http_port=0)


async def test_an_idle_http_server_turns_once_a_second_and_still_dates_its_answers_and_stops_at_once() -> None:
    process = serving()
    await process.start()
    server: Any = process._http
    turns = [0]
    tick = server.on_tick

    async def counting(counter: int) -> bool:
        turns[0] += 1
        return bool(await tick(counter))

    server.on_tick = counting
    try:
        async with httpx.AsyncClient(base_url=process.http_url) as client:
            first = await client.get("/ping")
            await asyncio.sleep(WATCHED_S)
            second = await client.get("/ping")
        assert first.json() == second.json() == {"ok": True}
        # At uvicorn's 100 ms, ~30 turns in these 3 s; here one a second.
        assert turns[0] <= WATCHED_S + 2, turns[0]
        # The `Date` header is renewed as often as before (once a second): the second answer is dated ~3 s later.
        dated = parsedate_to_datetime(second.headers["date"]) - parsedate_to_datetime(first.headers["date"])
        assert WATCHED_S - 2 <= dated.total_seconds() <= WATCHED_S + 2
    finally:
        asked = time.monotonic()
        await process.stop()
    assert time.monotonic() - asked < 0.5  # the stop does not wait for the next turn
