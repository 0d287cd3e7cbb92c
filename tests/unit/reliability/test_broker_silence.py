"""A service cut off from the broker says so: `/health` turns 503 after `stall_after_s`, a gauge counts the seconds.

Before this, `Liveness.lag` swallowed the broker's error and counted the unknown lag as 0, so `/health` said ok for ever
(findings/platform2.md, item 2).
"""

from __future__ import annotations

from typing import Any

from aiokafka.errors import KafkaConnectionError
from prometheus_client import REGISTRY

from servicekit import Bus, ServiceProcess
from servicekit.liveness import Liveness
from servicekit.release import RELEASE, commit
from tidegate.commands.status import health_answer


class Consumer:
    """A started consumer with one partition at position 4 of 10, whose broker answers while `answering`."""

    def __init__(self, *, assigned: bool = True) -> None:
        self.answering = True
        self.assigned = assigned
        self.asked: list[str] = []

    def assignment(self) -> set[str]:
        return {"tp"} if self.assigned else set()

    async def end_offsets(self, tps: list[str]) -> dict[str, int]:
        self.asked.append("end_offsets")
        if not self.answering:
            raise KafkaConnectionError("Unable connect to 127.0.0.1:1")
        return dict.fromkeys(tps, 10)

    async def topics(self) -> set[str]:
        self.asked.append("topics")
        if not self.answering:
            raise KafkaConnectionError("Unable to get cluster metadata")
        return {"t"}

    class _subscription:
        class subscription:
            class assignment:
                @staticmethod
                def state_value(tp: str) -> Any:
                    return type("S", (), {"position": 4, "has_valid_position": True})()


class Subscriber:
    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer


class NoProducer:
    async def publish(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("nothing is published here")


async def test_a_broker_that_stops_answering_is_timed_from_its_last_answer_and_forgotten_once_it_answers() -> None:
    consumer = Consumer()
    live = Liveness()
    live.watch(Subscriber(consumer))
    assert await live.lag() == 6
    assert (live.silent_s(), live.broker_silence()) == (0.0, None)
    answered = live.last_answer

    consumer.answering = False
    assert await live.lag() == 0  # unknown this time
    assert live.silent_s(now=answered + 130) == 130
    assert "the broker has not answered for 130s (KafkaConnectionError" in (live.broker_silence(now=answered + 130) or "")

    consumer.answering = True
    assert await live.lag() == 6
    assert (live.silent_s(), live.broker_silence()) == (0.0, None)


async def test_a_consumer_with_no_partitions_asks_the_broker_for_metadata() -> None:
    consumer = Consumer(assigned=False)
    live = Liveness()
    live.watch(Subscriber(consumer))
    consumer.answering = False
    assert await live.lag() == 0
    assert consumer.asked == ["topics"]
    assert live.broker_silence() is not None


async def test_health_is_503_once_the_broker_has_been_silent_past_stall_after_s_and_retrying_before() -> None:
    consumer = Consumer()
    bus = Bus(NoProducer(), "executor", "unused:1", "p.")  # type: ignore[arg-type]
    bus.liveness.watch(Subscriber(consumer))
    process = ServiceProcess(name="executor", bus=bus, stall_after_s=60)
    process.started = True
    consumer.answering = False
    await bus.liveness.lag()

    shortly = process.health()
    assert shortly["ok"] is True
    assert "the broker has not answered" in shortly["retrying"]  # `tidegate status` shows `retrying: …`

    bus.liveness.last_answer -= 61  # a minute later, still silent
    later = process.health()
    assert later["ok"] is False
    assert "the broker has not answered for 61s" in later["reason"]
    state, detail = health_answer(503, later)  # what `tidegate status` makes of it
    assert state == "unhealthy"
    assert "the broker has not answered" in (detail or "")

    consumer.answering = True
    await bus.liveness.lag()
    assert process.health() == {
        "ok": True, "service": "executor", "reason": None, "retrying": None, "release": RELEASE, "commit": commit(),
    }  # fmt: skip


async def test_the_watchdog_exports_the_silence_as_a_gauge_per_service_and_does_not_exit_for_it() -> None:
    import asyncio

    consumer = Consumer()
    consumer.answering = False
    bus = Bus(NoProducer(), "silent-svc", "unused:1", "p.")  # type: ignore[arg-type]
    bus.liveness.watch(Subscriber(consumer))
    process = ServiceProcess(name="silent-svc", bus=bus, stall_after_s=0.01, watch_interval_s=0.01)
    watch = asyncio.create_task(process.watch())
    try:
        while bus.liveness.unanswered is None:
            await asyncio.sleep(0.01)
        bus.liveness.last_answer -= 200
        assert (REGISTRY.get_sample_value("tidegate_broker_silent_seconds", {"service": "silent-svc"}) or 0) >= 200
        await asyncio.sleep(0.1)
        assert not watch.done()  # a broker outage makes the service unhealthy, not restarted
        assert process.stalled is None
    finally:
        watch.cancel()
