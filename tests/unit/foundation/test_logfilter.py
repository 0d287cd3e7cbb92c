"""aiokafka's reconnect errors, ~1,000 lines a second over five services while the broker is away, are rate-limited."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from servicekit.logfilter import Repeats, limit_repeats
from tests.unit.hand_clock import HandClock


@pytest.fixture
def written() -> Iterator[tuple[io.StringIO, logging.Handler]]:
    """A handler on the root logger that writes each line it is given."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield out, handler
    finally:
        root.removeHandler(handler)


def test_a_flood_of_reconnect_errors_is_one_line_then_one_count_per_window(written: tuple[io.StringIO, logging.Handler]) -> None:
    out, handler = written
    clock = HandClock()
    repeats = Repeats(10, clock=clock, timers=False)
    handler.addFilter(repeats)
    conn = logging.getLogger("aiokafka.conn")
    for i in range(813):
        clock.now += 0.01
        conn.error('Unable connect to "%s:%s": %s', "127.0.0.1", 19092, f"[Errno 111] try {i}")
    assert out.getvalue().splitlines() == ['aiokafka.conn ERROR Unable connect to "127.0.0.1:19092": [Errno 111] try 0']

    clock.now += 2  # the window (10 s from the first line) has ended
    repeats.report()
    lines = out.getvalue().splitlines()
    assert lines[1] == 'aiokafka.conn ERROR Unable connect to "127.0.0.1:19092": [Errno 111] try 812 [repeated 812 times in 10 s]'

    conn.error('Unable connect to "%s:%s": %s', "127.0.0.1", 19092, "back again")  # a new window opens with a line
    assert out.getvalue().splitlines()[2].endswith("back again")


def test_each_kind_passes_once_and_the_service_own_lines_are_never_held(written: tuple[io.StringIO, logging.Handler]) -> None:
    out, handler = written
    clock = HandClock()
    handler.addFilter(Repeats(10, clock=clock, timers=False))
    for _ in range(3):
        logging.getLogger("aiokafka.conn").error("Unable connect to %s", "x")
        logging.getLogger("aiokafka.consumer.group_coordinator").error("Error sending JoinGroupRequest: %s", "x")
        logging.getLogger("servicekit.bus").error("rejected %s: handler_error", "t@1")
    lines = out.getvalue().splitlines()
    assert sum("Unable connect" in line for line in lines) == 1
    assert sum("JoinGroupRequest" in line for line in lines) == 1
    assert sum("handler_error" in line for line in lines) == 3


def test_repeats_left_at_exit_are_reported_and_a_quiet_kind_passes_again(written: tuple[io.StringIO, logging.Handler]) -> None:
    out, handler = written
    clock = HandClock()
    repeats = Repeats(10, clock=clock, timers=False)
    handler.addFilter(repeats)
    conn = logging.getLogger("aiokafka.conn")
    for _ in range(3):
        conn.error("Unable connect")
    clock.now += 4
    repeats.report()  # the window has not ended: nothing yet
    assert len(out.getvalue().splitlines()) == 1
    repeats.report(everything=True)
    assert out.getvalue().splitlines()[1] == "aiokafka.conn ERROR Unable connect [repeated 2 times in 4 s]"

    clock.now += 11
    conn.warning("Heartbeat failed")
    clock.now += 11  # quiet for a window: the kind's next line passes
    conn.warning("Heartbeat failed")
    assert sum("Heartbeat failed" in line for line in out.getvalue().splitlines()) == 2


def test_limit_repeats_installs_one_filter_on_the_root_handlers_with_a_timer(written: tuple[io.StringIO, logging.Handler]) -> None:
    out, handler = written
    root = logging.getLogger()
    try:
        limit_repeats(0.05)
        repeats = limit_repeats(0.05)  # installed again: replaces, does not stack
        assert [f for f in handler.filters if isinstance(f, Repeats)] == [repeats]
        conn = logging.getLogger("aiokafka.conn")
        for _ in range(5):
            conn.error("Unable connect")
        import time

        deadline = time.monotonic() + 5
        while "repeated 4 times" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "aiokafka.conn ERROR Unable connect [repeated 4 times in" in out.getvalue()
    finally:
        for h in root.handlers:
            for f in [f for f in h.filters if isinstance(f, Repeats)]:
                h.removeFilter(f)
