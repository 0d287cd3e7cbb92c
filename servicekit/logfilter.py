"""The Kafka client's repeated lines, rate-limited: one line of a kind, then one count of its repeats per window.

While the broker is away, aiokafka logs an error at every reconnect try: about 1,000 lines a second over five
services, 15 MB in a two-minute outage. `limit_repeats` puts a `Repeats` filter on the root logger's handlers: the first
line of a kind (logger, level, message template) passes; the lines of that kind in the next `window_s` are counted, and
when the window ends one line reports them ("… [repeated 812 times in 10 s]", with the last one's text). The next line
of the kind after that passes and opens a new window. The service's own lines are never held back.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

__all__ = ["WINDOW_S", "OnRootHandlers", "Repeats", "limit_repeats"]

WINDOW_S = 10.0
LIMITED = ("aiokafka", "kafka")  # the loggers (and their children) whose lines are limited
_SUMMARY = "repeats_summary"  # marks the count's own line, which passes


class OnRootHandlers(logging.Filter):
    """A filter every handler of the root logger asks: each record is decided once, the first answer kept on the record.

    A subclass says how in `_passes`, under `self._lock`, and names the record attribute that keeps the answer.
    `install` puts it on the root logger's handlers in place of one of its kind; `_later` calls back from a timer thread
    unless a test drives the clock and calls back itself (`timers=False`).
    """

    _decided: ClassVar[str]  # the record attribute the answer is kept in

    def __init__(self, *, clock: Callable[[], float], timers: bool) -> None:
        super().__init__()
        self._clock = clock
        self._timers = timers
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether `record` is written (decided once per record: every handler of the root logger asks)."""
        decided = record.__dict__.get(self._decided)
        if decided is None:
            decided = record.__dict__[self._decided] = self._passes(record)
        return bool(decided)

    def _passes(self, record: logging.LogRecord) -> bool:
        raise NotImplementedError

    def _later(self, delay_s: float, call: Callable[[], None]) -> None:
        if self._timers:
            timer = threading.Timer(delay_s, call)
            timer.daemon = True
            timer.start()

    def install(self, *, first: bool, at_exit: Callable[[], None]) -> None:
        """Put this filter on the root logger's handlers (first, or after theirs) in place of one of its kind; `at_exit` at exit."""
        for handler in logging.getLogger().handlers:
            for old in [f for f in handler.filters if isinstance(f, type(self))]:
                handler.removeFilter(old)
            if first:
                handler.filters.insert(0, self)
            else:
                handler.addFilter(self)
        atexit.register(at_exit)


@dataclass
class _Window:
    opened: float
    repeats: int = 0
    last: logging.LogRecord | None = None


class Repeats(OnRootHandlers):
    """Passes the first line of a kind, holds back its repeats for `window_s`, then logs how many there were."""

    _decided = "_repeats_passed"

    def __init__(self, window_s: float = WINDOW_S, *, clock: Callable[[], float] = time.monotonic, timers: bool = True) -> None:
        super().__init__(clock=clock, timers=timers)  # without timers, a test calls `report` itself
        self.window_s = window_s
        self._windows: dict[tuple[str, int, str], _Window] = {}

    def _passes(self, record: logging.LogRecord) -> bool:
        if getattr(record, _SUMMARY, False) or not any(record.name == n or record.name.startswith(n + ".") for n in LIMITED):
            return True
        kind, now = (record.name, record.levelno, str(record.msg)), self._clock()
        with self._lock:
            window = self._windows.get(kind)
            if window is None or (window.repeats == 0 and now - window.opened >= self.window_s):
                self._windows[kind] = _Window(now)
                return True
            window.repeats += 1
            window.last = record
            first_repeat = window.repeats == 1
        if first_repeat:
            self._later(max(0.0, window.opened + self.window_s - now), self.report)
        return False

    def report(self, *, everything: bool = False) -> None:
        """Log the count of each window that has ended (every window with `everything`, as the process exits)."""
        now = self._clock()
        with self._lock:
            ended = [k for k, w in self._windows.items() if w.repeats and (everything or now - w.opened >= self.window_s)]
            counts = [self._windows.pop(kind) for kind in ended]
        for window in counts:
            last = window.last
            assert last is not None  # a window with repeats holds its last one
            logging.getLogger(last.name).log(
                last.levelno,
                "%s [repeated %d times in %.0f s]",
                last.getMessage(),
                window.repeats,
                now - window.opened,
                extra={_SUMMARY: True},
            )


def limit_repeats(window_s: float = WINDOW_S) -> Repeats:
    """Put one `Repeats` filter on the root logger's handlers (call after `logging.basicConfig`); repeats left are logged at exit."""
    repeats = Repeats(window_s)
    repeats.install(first=False, at_exit=partial(repeats.report, everything=True))
    return repeats
