"""An SRE's probe of `/health` while the broker is away: answered at once, and saying what the service waits for.

SRE probe F4: with the broker stopped under `tidegate up`, `/health` said `retrying: null` for 15 to 45 s (the
policy's three consumers were checked one after another, 10 s each, and nothing was shown before a whole round had
timed out), then jumped to "not answered for 46s": services said different things about the same outage, and a probe
read a waiting service as one with nothing to wait for.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

import pytest

from servicekit import Bus, ServiceProcess, liveness
from servicekit.health import serve_metrics_and_health
from tests.ports import free_port


class Unanswered:
    """A started consumer whose broker is gone: a check waits until its timeout ends it, as aiokafka's does."""

    def assignment(self) -> set[str]:
        return {"tp"}

    async def end_offsets(self, tps: list[str]) -> dict[str, int]:
        await asyncio.Event().wait()
        raise AssertionError("never answered")


class Subscriber:
    def __init__(self) -> None:
        self.consumer = Unanswered()


class NoProducer:
    async def publish(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("nothing is published here")


def _probe(port: int) -> tuple[float, int, dict[str, Any]]:
    """What a probe with a 1 s timeout gets: how long it took, the status and the body."""
    began = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
            status, body = answer.status, answer.read()
    except urllib.error.HTTPError as refused:
        status, body = refused.code, refused.read()
    return time.monotonic() - began, status, json.loads(body)


async def test_health_says_at_once_that_the_service_waits_for_the_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(liveness, "BROKER_WAITING_S", 0.3, raising=False)
    monkeypatch.setattr(liveness, "BROKER_CHECK_TIMEOUT_S", 30.0)  # the outage is seen long before a check times out
    bus = Bus(NoProducer(), "policy", "unused:1", "p.")  # type: ignore[arg-type]
    for _ in range(3):  # the policy reads three consumers
        bus.liveness.watch(Subscriber())
    process = ServiceProcess(name="policy", bus=bus, stall_after_s=120, watch_interval_s=0.05)
    process.started = True
    port = free_port()
    server = serve_metrics_and_health(port, process.health)
    watchdog = asyncio.create_task(process.watch())
    try:
        await asyncio.sleep(0.8)
        took, status, body = await asyncio.to_thread(_probe, port)
        assert took < 0.5
        assert (status, body["ok"], body["reason"]) == (200, True, None)  # waiting, not dead: 503 only past stall_after_s
        assert "the broker has not answered for" in (body["retrying"] or "")
        assert "a check has waited" in body["retrying"]
        assert not watchdog.done()
    finally:
        watchdog.cancel()
        server.shutdown()
        server.server_close()


async def test_one_round_of_checks_costs_one_timeout_however_many_consumers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(liveness, "BROKER_CHECK_TIMEOUT_S", 0.4)
    live = liveness.Liveness()
    for _ in range(3):
        live.watch(Subscriber())
    began = time.monotonic()
    assert await live.lag() == 0
    assert time.monotonic() - began < 0.9  # one after another, it took 1.2 s: 30 s for the policy on the real timeout
    assert "TimeoutError" in (live.broker_silence() or "")
    assert live.asking_since is None
