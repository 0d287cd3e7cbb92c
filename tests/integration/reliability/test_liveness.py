"""A service that is alive but makes no progress says so on `/health` (plain HTTP) and its watchdog returns, so it exits."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
from bus_helpers import Producer
from reliability_helpers import get, good_event
from signers import AdminBus

from servicekit import Bus, KitSettings, ServiceProcess, runner
from servicekit.health import serve_metrics_and_health


class NoBroker:
    async def publish(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("nothing is published here")


async def test_health_turns_503_and_the_watchdog_fires_when_a_record_is_stuck_in_handling() -> None:
    bus = Bus(NoBroker(), "policy", "unused:1", "p.")  # type: ignore[arg-type]
    process = ServiceProcess(name="policy", bus=bus, handler_limit_s=0.2, watch_interval_s=0.05)
    server = serve_metrics_and_health(0, process.health)
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        status, body = await asyncio.to_thread(get, f"{url}/health")
        assert (status, body["reason"]) == (503, "starting")  # a probe sees a start that has not finished (or hangs)
        process.started = True  # as `start` leaves it
        status, body = await asyncio.to_thread(get, f"{url}/health")
        assert (status, body["ok"]) == (200, True)
        for elsewhere in ("/ready", "/healthz", "/"):  # a probe aimed at another path fails, it does not pass on the metrics' 200
            with pytest.raises(urllib.error.HTTPError) as missing:
                await asyncio.to_thread(urllib.request.urlopen, f"{url}{elsewhere}", timeout=5)
            assert missing.value.code == 404
        with bus.liveness.running():  # a handler that never returns
            reason = await asyncio.wait_for(process.watch(), 5)
        assert "in handling" in reason
        status, body = await asyncio.to_thread(get, f"{url}/health")
        assert (status, body["ok"]) == (503, False)
        assert "in handling" in body["reason"]
        metrics = await asyncio.to_thread(lambda: urllib.request.urlopen(f"{url}/metrics", timeout=5).read())
        assert b"tidegate_" in metrics or b"python_info" in metrics
    finally:
        server.shutdown()
        server.server_close()


async def test_the_watchdog_fires_when_the_producer_is_dead() -> None:
    bus = Bus(NoBroker(), "policy", "unused:1", "p.")  # type: ignore[arg-type]
    process = ServiceProcess(name="policy", bus=bus, watch_interval_s=10)
    watch = asyncio.create_task(process.watch())
    bus.failure = RuntimeError("OutOfOrderSequenceNumber")
    bus.failed.set()
    reason = await asyncio.wait_for(watch, 5)
    assert reason.startswith("producer dead")
    assert process.health()["ok"] is False


class IdleBus(Bus):
    """A bus with nothing to consume: start and stop do no I/O."""

    stopped: bool = False

    async def start(self, *, timeout_s: float = 30.0) -> None:
        return None

    async def stop(self) -> None:
        self.stopped = True


async def test_a_process_whose_producer_died_stops_and_exits_75_for_its_supervisor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "tune_gc", lambda: None)  # not in the test process
    bus = IdleBus(NoBroker(), "policy", "unused:1", "p.")  # type: ignore[arg-type]
    process = ServiceProcess(name="policy", bus=bus, watch_interval_s=0.05)
    bus.failure = RuntimeError("OutOfOrderSequenceNumber")  # as Bus.producer_dead leaves it
    bus.failed.set()
    with pytest.raises(SystemExit) as exited:  # awaited directly: SystemExit would escape a task's event loop
        await process.run_until_signalled()  # the suite's per-test timeout bounds it
    assert exited.value.code == runner.EXIT_STALLED == 75
    assert bus.stopped


async def test_liveness_sees_records_waiting_behind_a_stuck_handler_on_the_real_broker(kit: KitSettings, wait_for: Any) -> None:
    bus = AdminBus(kit, "policy")
    entered, release = asyncio.Event(), asyncio.Event()

    async def stuck(event: Any) -> None:
        entered.set()
        await release.wait()

    bus.consume("actions.proposed", stuck, group_id=f"{kit.topic_prefix}policy", max_records=1)
    producer = Producer(kit)
    await producer.start()
    await bus.start()
    try:
        task = f"t-{uuid.uuid4().hex[:8]}"
        await producer.send("actions.proposed", good_event("actions.proposed", task))
        await wait_for(entered.is_set, timeout=30, what="the handler entered")
        for _ in range(5):
            await producer.send("actions.proposed", good_event("actions.proposed", task))

        async def five_waiting() -> bool:
            return await bus.liveness.lag() >= 5

        await wait_for(five_waiting, timeout=30, what="five records seen waiting")
        first_seen = bus.liveness.last_progress + 1
        assert await bus.liveness.stalled(stall_after_s=60, handler_limit_s=10_000, now=first_seen) is None
        later = await bus.liveness.stalled(stall_after_s=60, handler_limit_s=10_000, now=first_seen + 61)
        assert "records waiting" in (later or "")
    finally:
        release.set()
        await bus.stop()
        await producer.stop()


def _refused_port() -> int:
    """A loopback port nothing listens on: a broker that went away."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_consumer_cut_off_from_the_real_broker_turns_health_503_without_exiting_and_recovers(
    kit: KitSettings, wait_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """findings/platform2.md item 2: with the broker gone, `/health` said ok for ever (an unknown lag counted as 0)."""
    from aiokafka.cluster import BrokerMetadata

    from servicekit import liveness

    monkeypatch.setattr(liveness, "BROKER_CHECK_TIMEOUT_S", 2.0)  # the check's wait for an answer, shortened for the test
    bus = AdminBus(kit, "policy")

    async def handle(event: Any) -> None:
        return None

    bus.consume("actions.proposed", handle, group_id=f"{kit.topic_prefix}policy-{uuid.uuid4().hex[:6]}", max_records=1)
    await bus.start()
    process = ServiceProcess(name="policy", bus=bus, stall_after_s=1.0, watch_interval_s=0.2)
    process.started = True
    server = serve_metrics_and_health(0, process.health)
    url = f"http://127.0.0.1:{server.server_port}/health"
    watch = asyncio.create_task(process.watch())
    client = bus.pollers[0].consumer._client  # type: ignore[union-attr]
    real = dict(client.cluster._brokers)
    try:
        await wait_for(lambda: bus.liveness.last_answer > 0 and bus.liveness.unanswered is None, what="a first answered check")
        assert (await asyncio.to_thread(get, url))[0] == 200

        refused = _refused_port()  # every broker the client knows now points nowhere, and its connections drop
        client.cluster._brokers = {node: BrokerMetadata(node, "127.0.0.1", refused, None) for node in real}
        for conn in list(client._conns.values()):
            conn.close()

        async def unhealthy() -> dict[str, Any] | None:
            status, body = await asyncio.to_thread(get, url)
            return body if status == 503 else None

        body = await wait_for(unhealthy, timeout=30, what="/health 503 for the silent broker")
        assert "the broker has not answered for" in body["reason"]
        assert not watch.done()  # unhealthy, not restarted: a restart would not bring the broker back

        client.cluster._brokers = real  # the broker is back
        for conn in list(client._conns.values()):
            conn.close()

        async def healthy() -> bool:
            return (await asyncio.to_thread(get, url))[0] == 200

        await wait_for(healthy, timeout=60, what="/health 200 once the broker answers again")
    finally:
        client.cluster._brokers = real
        watch.cancel()
        server.shutdown()
        server.server_close()
        await bus.stop()
