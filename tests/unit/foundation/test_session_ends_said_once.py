"""The on-call greps the services' logs for ERROR: the broker ending a login every 5 minutes is no outage (oncall F2).

The lines are aiokafka's own, as the executor wrote them at 10:20:54 on a `tidegate infra up` broker
(`TIDEGATE_KAFKA_SESSION_MAX_S` 300 s) five minutes after its start, and the policy's as the broker was stopped.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

from servicekit.logfilter import Repeats
from servicekit.session_ends import SessionEnds
from tests.unit.hand_clock import HandClock as Clock

CLOSED = "Connection at 127.0.0.1:23392 closed"


@pytest.fixture
def written() -> Iterator[tuple[io.StringIO, SessionEnds, Clock]]:
    """The root logger's handler as a service has it: the session filter first, then the repeats' counts."""
    out, clock = io.StringIO(), Clock()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    ends = SessionEnds(10, clock=clock, timers=False)
    handler.addFilter(ends)
    handler.addFilter(Repeats(10, clock=clock, timers=False))
    root, said = logging.getLogger(), logging.getLogger("servicekit.session_ends")
    root.addHandler(handler)
    said.setLevel(logging.INFO)  # a service logs at INFO (`configure_logging`)
    try:
        yield out, ends, clock
    finally:
        root.removeHandler(handler)
        said.setLevel(logging.NOTSET)


def _session_ended() -> None:
    """What the executor wrote when the broker closed its connections at the end of their login."""
    logging.getLogger("aiokafka").warning("Unable to request metadata from node with id 1: KafkaConnectionError(%r)", CLOSED)
    logging.getLogger("aiokafka").error("Unable to update metadata from [1]")
    coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
    coordinator.error("Error sending HeartbeatRequest to node 1 [KafkaConnectionError: %s] -- marking coordinator dead", CLOSED)
    coordinator.warning("Marking the coordinator dead (node 1)for group tidegate.executor.")
    coordinator.error("Heartbeat send request failed: KafkaConnectionError: %s. Will retry.", CLOSED)


def test_a_login_session_the_broker_ended_is_one_info_line_not_five_errors(written: tuple[io.StringIO, SessionEnds, Clock]) -> None:
    out, ends, clock = written
    _session_ended()
    clock.now += 3
    logging.getLogger("aiokafka.consumer.fetcher").error("Failed fetch messages from 1: KafkaConnectionError: %s", CLOSED)
    assert out.getvalue() == ""  # held: the grace has not ended
    clock.now += 7  # 10 s from the first: no failure to connect followed, the clients logged in again
    ends.settle()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("INFO servicekit.session_ends: the broker closed this service's Kafka connections and they logged in again")
    assert "TIDEGATE_KAFKA_SESSION_MAX_S), not an outage; 6 line(s) of aiokafka's about it not written" in lines[0]
    assert "ERROR" not in out.getvalue()


def test_a_broker_that_went_away_keeps_every_line_in_order_with_the_counts(written: tuple[io.StringIO, SessionEnds, Clock]) -> None:
    out, ends, clock = written
    fetcher = logging.getLogger("aiokafka.consumer.fetcher")
    fetcher.error("Failed fetch messages from 1: KafkaConnectionError: %s", CLOSED)
    clock.now += 0.02
    for _ in range(3):
        logging.getLogger("aiokafka").error("Unable connect to node with id 1: [Errno 111] Connect call failed ('127.0.0.1', 23392)")
    lines = out.getvalue().splitlines()
    assert lines == [
        f"ERROR aiokafka.consumer.fetcher: Failed fetch messages from 1: KafkaConnectionError: {CLOSED}",
        "ERROR aiokafka: Unable connect to node with id 1: [Errno 111] Connect call failed ('127.0.0.1', 23392)",
    ]  # the close first, then the outage's first line; its repeats are counted as before
    clock.now += 20
    ends.settle()
    assert "session" not in out.getvalue()


def test_a_login_refused_after_a_close_is_written_with_the_close(written: tuple[io.StringIO, SessionEnds, Clock]) -> None:
    out, _ends, _clock = written
    logging.getLogger("aiokafka.consumer.fetcher").error("Failed fetch messages from 1: KafkaConnectionError: %s", CLOSED)
    logging.getLogger("aiokafka.conn").error("Authentication failed for user executor")
    assert [line.split(":")[0] for line in out.getvalue().splitlines()] == ["ERROR aiokafka.consumer.fetcher", "ERROR aiokafka.conn"]


def test_the_services_own_lines_and_aiokafka_lines_of_other_kinds_are_never_held(written: tuple[io.StringIO, SessionEnds, Clock]) -> None:
    out, _ends, _clock = written
    logging.getLogger("servicekit.bus").warning("rejected tidegate.actions.authorized[1]@3: authorization_expired: %s", CLOSED)
    logging.getLogger("aiokafka").error("Unable to update metadata from [1]")  # no close held: written
    assert len(out.getvalue().splitlines()) == 2


def test_lines_held_as_the_process_exits_are_written_as_they_were(written: tuple[io.StringIO, SessionEnds, Clock]) -> None:
    out, ends, _clock = written
    logging.getLogger("aiokafka.consumer.fetcher").error("Failed fetch messages from 1: KafkaConnectionError: %s", CLOSED)
    ends.flush()
    assert out.getvalue() == f"ERROR aiokafka.consumer.fetcher: Failed fetch messages from 1: KafkaConnectionError: {CLOSED}\n"


SERVICE = """
import logging
from servicekit.runner import configure_logging
from servicekit.session_ends import SessionEnds
configure_logging("INFO", "text")
fetcher = logging.getLogger("aiokafka.consumer.fetcher")
fetcher.error("Failed fetch messages from 1: KafkaConnectionError: Connection at 127.0.0.1:23392 closed")
logging.getLogger("aiokafka").error("Unable to update metadata from [1]")
ends = next(f for f in logging.getLogger().handlers[0].filters if isinstance(f, SessionEnds))
ends.grace_s = 0  # the 10 s passed with no failure to connect
ends.settle()
"""


def test_a_service_logs_the_end_of_a_login_session_as_one_info_line() -> None:
    """What a service's own logging (`configure_logging`) writes when the broker closes its connections every 5 minutes."""
    done = subprocess.run([sys.executable, "-c", SERVICE], capture_output=True, text=True, timeout=60, check=True)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines
    assert " INFO servicekit.session_ends: the broker closed this service's Kafka connections" in lines[0]
    assert "2 line(s) of aiokafka's about it not written" in lines[0]
