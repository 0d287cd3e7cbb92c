"""The broker ending a Kafka login, told apart from an outage: one INFO line instead of aiokafka's ERRORs every 5 minutes.

The broker closes each connection at its first request past `TIDEGATE_KAFKA_SESSION_MAX_S` (300 s; aiokafka cannot
re-authenticate in place) and the client logs in again at once. aiokafka says so at ERROR and WARNING, once per connection
("Failed fetch messages from 1: KafkaConnectionError: Connection at 127.0.0.1:9092 closed", "Heartbeat send request
failed …", "Marking the coordinator dead …", "Unable to update metadata from [1]"): three to eight lines every five minutes
in every service, which an on-call grepping ERROR reads as an outage (upgrader F7, oncall F2).

`SessionEnds` holds aiokafka's lines of a connection closed for `grace_s` from the first. Any other aiokafka warning or
error in that time (the broker cannot be reached: "Connect call failed", `NodeNotReadyError`; a login refused) is an
outage or a fault: the held lines are written as they were, in order, with their own times, then it. Otherwise the
connections came back, and one INFO line says so and how many lines it stands for. Nothing else is held.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from servicekit.logfilter import OnRootHandlers

__all__ = ["GRACE_S", "SessionEnds", "hold_session_ends"]

GRACE_S = 10.0
_CLOSED = "Connection at "  # KafkaConnectionError's text: "Connection at HOST:PORT closed"
_AFTER_CLOSED = ("Marking the coordinator dead", "Unable to update metadata from")  # said after a close, held only with one
_RELEASED = "_session_ends_released"  # a held record written after all: the filter passes it


def _closed(message: str) -> bool:
    start = message.find(_CLOSED)
    return start >= 0 and message.find(" closed", start) > 0


class SessionEnds(OnRootHandlers):
    """Holds aiokafka's lines of closed connections for `grace_s`: written if an outage follows, else one INFO line for them."""

    _decided = "_session_ends_passed"

    def __init__(self, grace_s: float = GRACE_S, *, clock: Callable[[], float] = time.monotonic, timers: bool = True) -> None:
        super().__init__(clock=clock, timers=timers)  # without timers, a test calls `settle` itself
        self.grace_s = grace_s
        self._held: list[logging.LogRecord] = []
        self._opened = 0.0

    def _passes(self, record: logging.LogRecord) -> bool:
        if getattr(record, _RELEASED, False) or record.levelno < logging.WARNING:
            return True
        if record.name != "aiokafka" and not record.name.startswith("aiokafka."):
            return True
        message = record.getMessage()
        release: list[logging.LogRecord] = []
        with self._lock:
            if _closed(message) or (self._held and message.startswith(_AFTER_CLOSED)):
                if not self._held:
                    self._opened = self._clock()
                    self._later(self.grace_s, self.settle)
                self._held.append(record)
                return False
            release, self._held = self._held, []
        self._write(release)  # an outage or a fault follows the closes: they are part of its story
        return True

    def settle(self) -> None:
        """End a window `grace_s` old: the held lines were a re-login, said in one INFO line."""
        with self._lock:
            if not self._held or self._clock() - self._opened < self.grace_s:
                return
            held, self._held = self._held, []
        logging.getLogger("servicekit.session_ends").info(
            "the broker closed this service's Kafka connections and they logged in again at once: the end of a login session "
            "(TIDEGATE_KAFKA_SESSION_MAX_S), not an outage; %d line(s) of aiokafka's about it not written, the first: %s",
            len(held),
            held[0].getMessage(),
            extra={_RELEASED: True},
        )

    def flush(self) -> None:
        """Write the held lines as they were (the process exits: what followed them is unknown)."""
        with self._lock:
            held, self._held = self._held, []
        self._write(held)

    def _write(self, records: list[logging.LogRecord]) -> None:
        for held in records:
            held.__dict__[_RELEASED] = True
            held.__dict__.pop(self._decided, None)
            logging.getLogger(held.name).handle(held)


def hold_session_ends(grace_s: float = GRACE_S) -> SessionEnds:
    """Put one `SessionEnds` filter first on the root logger's handlers (before `limit_repeats`' counts); held lines written at exit."""
    ends = SessionEnds(grace_s)
    ends.install(first=True, at_exit=ends.flush)
    return ends
