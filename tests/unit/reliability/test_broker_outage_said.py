"""The on-call replaying a night: a broker outage is one line of the service's own when it starts and one when it ends.

oncall's finding, left open: after a 3-minute broker stop the last lines of every service's log were aiokafka's
`Heartbeat session expired`, and nothing said the service had lost the broker, since when, nor that it was over, while a
database outage had its pair (`servicekit.db_outage`). A silence shorter than two checks (a rebalance, a login the
broker ended) must say nothing, or every night reads as an outage.
"""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from servicekit import Bus, ServiceProcess, broker_outage
from servicekit.broker_outage import BrokerWatch
from servicekit.liveness import Liveness
from tests.unit.reliability.test_broker_silence import Consumer as SilenceConsumer
from tests.unit.reliability.test_broker_silence import NoProducer, Subscriber


class Consumer(SilenceConsumer):
    """A started consumer at position 4 of a partition; its broker answers while `answering`, and the end grows meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.end = 10

    async def end_offsets(self, tps: list[str]) -> dict[str, int]:
        await super().end_offsets(tps)  # raises while the broker does not answer
        return dict.fromkeys(tps, self.end)


def _lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "servicekit.broker_outage"]


async def test_the_services_log_says_once_that_it_lost_the_broker_and_once_that_it_is_back_with_how_long(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_outage, "OUTAGE_AFTER_S", 0.3)
    consumer = Consumer()
    bus = Bus(NoProducer(), "executor", "127.0.0.1:27392", "p.")  # type: ignore[arg-type]
    bus.liveness.watch(Subscriber(consumer))
    process = ServiceProcess(name="executor", bus=bus, stall_after_s=120, watch_interval_s=0.05)
    process.started = True
    caplog.set_level(logging.INFO)
    watchdog = asyncio.create_task(process.watch())
    try:
        await asyncio.sleep(0.3)
        assert _lines(caplog) == []  # the broker answers: nothing to say
        consumer.answering = False  # the broker stops
        await asyncio.sleep(1.0)  # about 20 checks unanswered
        consumer.end = 22  # records published meanwhile wait for the consumer
        consumer.answering = True
        await asyncio.sleep(0.3)
        consumer.answering = False  # a second outage, later the same night
        await asyncio.sleep(0.6)
        consumer.answering = True
        await asyncio.sleep(0.3)
    finally:
        watchdog.cancel()
    said = _lines(caplog)
    assert [(r.levelno, "lost the broker" in r.getMessage(), "answers again, after" in r.getMessage()) for r in said] == [
        (logging.ERROR, True, False),
        (logging.WARNING, False, True),
        (logging.ERROR, True, False),
        (logging.WARNING, False, True),
    ]
    lost, back = said[0].getMessage(), said[1].getMessage()
    assert lost.startswith("executor: lost the broker at 127.0.0.1:27392: no answer since ")
    assert "KafkaConnectionError" in lost
    assert "Another line says when it answers again" in lost
    away = re.search(r"after (\d+)s without an answer \(from (\S+ \S+) to (\S+ \S+) UTC\)", back)
    assert away is not None, back
    assert int(away.group(1)) >= 1  # away 1 s and more (the checks run every 0.05 s)
    assert "18 records wait on its partitions" in back
    assert "nothing was skipped" in back


def test_a_silence_shorter_than_an_outage_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """A check caught by a rebalance, or by the broker ending a login (every 5 minutes), is no outage."""
    live, watch = Liveness(last_answer=100.0), BrokerWatch("planner", "127.0.0.1:27392")
    caplog.set_level(logging.INFO)
    live.unanswered = "KafkaConnectionError('Connection at 127.0.0.1:27392 closed')"
    watch.seen(live, now=105.0)
    live.unanswered, live.last_answer = None, 110.0
    watch.seen(live, now=110.0)
    assert _lines(caplog) == []
    live.unanswered = "KafkaTimeoutError()"
    watch.seen(live, now=121.0)
    watch.seen(live, now=126.0)  # still away: said once
    assert [r.levelno for r in _lines(caplog)] == [logging.ERROR]
    assert "(11s; KafkaTimeoutError())" in _lines(caplog)[0].getMessage()
