"""Unit tests: pure logic and in-memory brokers; any socket to the outside is a bug."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests may only talk to loopback (in-process stubs); Kafka and PostgreSQL belong to integration."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("/"):
            raise RuntimeError(f"unit test tried to reach {address!r}")
        if isinstance(address, tuple) and address[1] in (19092, 55432):
            raise RuntimeError("unit test tried to reach the real Kafka/PostgreSQL; move it to tests/integration")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """A test that runs a command in process (`tidegate mcp serve` configures logging as a service does) leaves the
    root logger's handlers, their filters (`servicekit.session_ends`, `servicekit.logfilter`) and the levels it set
    behind for every later test: put them back."""
    root = logging.getLogger()
    named = [logging.getLogger(n) for n in ("aiokafka", "kafka")]
    handlers = list(root.handlers)
    filters = {h: list(h.filters) for h in handlers}
    levels = [(lg, lg.level) for lg in (root, *named)]
    yield
    for handler in [h for h in root.handlers if h not in filters]:
        root.removeHandler(handler)
    for handler, kept in filters.items():
        handler.filters[:] = kept
    for lg, level in levels:
        lg.setLevel(level)
