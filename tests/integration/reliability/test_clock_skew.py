"""A service whose clock is off says so: the SRE game day's F1, on the real broker.

An executor ten minutes ahead (`faketime -f '+600s'`) refused every authorization as expired, 31 tasks of 31
failed `authorization_expired`, and its `/health` said ok. The service's producer reads the broker's append time
off each acknowledgement (every topic is `LogAppendTime`), so a clock off by more than `TIDEGATE_MAX_CLOCK_SKEW_S`
shows on `/health` (503, naming the clock) and in `tidegate_clock_offset_seconds`; one that agrees never does.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from reliability_helpers import get, good_event, wire

from servicekit import Bus, KitSettings, ServiceProcess, kafka_options
from servicekit.clock import BrokerClock
from servicekit.health import serve_metrics_and_health
from servicekit.producer import Producer

AHEAD_S = 600.0
CHILD = Path(__file__).with_name("clock_child.py")


async def publish_a_result(kit: KitSettings, clock: BrokerClock) -> tuple[ServiceProcess, Bus]:
    """The executor's bus, on the real broker, with `clock` as its host's wall clock, after publishing one result."""
    producer = Producer(kit.kafka_bootstrap, "executor", **kafka_options(kit, "executor"))
    producer.clock = clock
    bus = Bus(producer, "executor", kit.kafka_bootstrap, kit.topic_prefix)
    await producer.start()
    event = good_event("actions.results", f"t-{uuid.uuid4().hex[:8]}")
    await bus.publish_recorded("actions.results", event.key, wire(event, kit), None)
    process = ServiceProcess.of(kit, "executor", bus, pool=None)
    process.started = True  # as `start` leaves it: only the clock is in question here
    return process, bus


async def test_an_executor_ten_minutes_ahead_is_unhealthy_and_names_its_clock(kit: KitSettings) -> None:
    ahead = BrokerClock(now=lambda: time.time() + AHEAD_S)
    process, bus = await publish_a_result(kit, ahead)
    server = serve_metrics_and_health(0, process.health)
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        status, body = await asyncio.to_thread(get, f"{url}/health")
        assert status == 503, body
        assert "ahead of the broker" in body["reason"], body
        assert AHEAD_S - 30 < body["clock_offset_s"] <= AHEAD_S + 1, body
        watching = asyncio.create_task(process.watch())  # the watchdog hands the gauge its reading
        await asyncio.sleep(0.2)
        watching.cancel()
        metrics = (await asyncio.to_thread(lambda: urllib.request.urlopen(f"{url}/metrics", timeout=5).read())).decode()
        line = next(m for m in metrics.splitlines() if m.startswith('tidegate_clock_offset_seconds{service="executor"}'))
        assert AHEAD_S - 30 < float(line.split()[-1]) <= AHEAD_S + 1, line
    finally:
        server.shutdown()
        server.server_close()
        await bus.producer.stop()


async def test_a_clock_behind_the_brokers_is_named_too(kit: KitSettings) -> None:
    process, bus = await publish_a_result(kit, BrokerClock(now=lambda: time.time() - AHEAD_S))
    try:
        health = process.health()
        assert health["ok"] is False, health
        assert "behind the broker" in health["reason"], health
        assert health["clock_offset_s"] <= -(AHEAD_S - 30), health
    finally:
        await bus.producer.stop()


async def test_a_clock_that_agrees_with_the_brokers_is_healthy(kit: KitSettings) -> None:
    process, bus = await publish_a_result(kit, BrokerClock())
    try:
        health = process.health()
        assert health["ok"] is True, health
        assert health["reason"] is None, health
        assert bus.producer.clock.readings == 1  # the acknowledgement did carry the broker's time
        assert abs(health["clock_offset_s"]) < 5, health
    finally:
        await bus.producer.stop()


async def run_moved(kit: KitSettings, tmp_path: Path, moved_s: float) -> dict[str, Any]:
    """clock_child.py run with this host's wall clock moved by `moved_s` (libfaketime): its `/health`, and its `times`."""
    event = good_event("actions.results", f"t-{uuid.uuid4().hex[:8]}")
    (tmp_path / "event").write_bytes(wire(event, kit))
    env = os.environ | {
        "TIDEGATE_KAFKA_BOOTSTRAP": kit.kafka_bootstrap,
        "TIDEGATE_TOPIC_PREFIX": kit.topic_prefix,
        "TIDEGATE_KEYS_DIR": str(kit.keys_dir),
        "PYTHONPATH": str(Path(__file__).resolve().parents[3]),
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # asyncio's timers on the real monotonic clock; the wall clock moved
    }
    env.pop("TIDEGATE_METRICS_PORT", None)
    command = ["faketime", "-f", f"{moved_s:+.0f}s", sys.executable, str(CHILD), str(tmp_path / "event"), (event.key or b"").decode()]
    done = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    health: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return health


@pytest.mark.skipif(shutil.which("faketime") is None, reason="libfaketime's `faketime` is not installed (apt-get install faketime)")
async def test_a_process_run_ten_minutes_ahead_under_faketime_is_unhealthy(kit: KitSettings, tmp_path: Path) -> None:
    """The game day's fault itself: the host's clock moved by libfaketime, nothing in the process told of it."""
    health = await run_moved(kit, tmp_path, AHEAD_S)
    assert health["ok"] is False, health
    assert "ahead of the broker" in health["reason"], health
    assert AHEAD_S - 30 < health["clock_offset_s"] <= AHEAD_S + 1, health


@pytest.mark.skipif(shutil.which("faketime") is None, reason="libfaketime's `faketime` is not installed (apt-get install faketime)")
async def test_a_host_ten_minutes_ahead_issues_lifetimes_at_the_brokers_time(kit: KitSettings, tmp_path: Path) -> None:
    """A policy host ten minutes ahead signed authorizations that lived ten minutes longer: it now issues at the broker's time."""
    before = time.time()
    times = (await run_moved(kit, tmp_path, AHEAD_S))["times"]
    after = time.time()
    assert times["host"] > after + AHEAD_S - 30, times  # the host's clock was moved
    assert before - 1 <= times["issuing"] <= after + 1, times  # what an authorization is issued at: the broker's time
    assert times["judging"] >= times["host"] - 1, times  # judged at the later: this host's own, ahead


@pytest.mark.skipif(shutil.which("faketime") is None, reason="libfaketime's `faketime` is not installed (apt-get install faketime)")
async def test_a_host_ten_minutes_behind_judges_lifetimes_at_the_brokers_time(kit: KitSettings, tmp_path: Path) -> None:
    """An executor or approval copy ten minutes behind kept expired authorizations and requests alive: it now judges at the broker's."""
    before = time.time()
    times = (await run_moved(kit, tmp_path, -AHEAD_S))["times"]
    after = time.time()
    assert times["host"] < before - AHEAD_S + 30, times
    assert before - 1 <= times["judging"] <= after + 1, times  # deadlines judged at the broker's time, not 10 minutes back
    assert times["issuing"] <= after + 1, times  # never issued later than the broker's time
