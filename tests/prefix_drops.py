"""Test prefixes dropped on a thread of their own: a test's teardown does not wait while the broker deletes its topics.

Deleting a test's topics and revoking its rights (`servicekit.drop_prefix`) is round trips to the broker's controller,
mostly waiting: done in the teardown of every test, it added that wait to each of them. The `topics` fixture hands the
prefix here instead, and the next test starts while it is dropped (on a 2-core CI machine the live suite keeps one core
busy, so the drop takes the idle one). At most `MAX_PENDING` prefixes wait to be dropped (a broker slower than the tests
makes the teardown wait, so partitions never pile up), and the session ends only once every prefix is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

MAX_PENDING = 2

Drop = Callable[..., Awaitable[Any]]


async def drop_logged(bootstrap: str, prefix: str, *, client_options: Mapping[str, Any] | None = None) -> None:
    """Drop every topic under `prefix` and the rights granted on it; a failure is logged, never raised (as the teardown did)."""
    from servicekit import drop_prefix

    try:
        await drop_prefix(bootstrap, prefix, client_options=client_options)
    except Exception:  # cleanup must never fail a test
        logging.getLogger(__name__).warning("could not drop test prefix %s", prefix, exc_info=True)


class PrefixDrops:
    """Drops prefixes one after the other on one thread (an event loop of its own each), while the tests go on."""

    def __init__(self, drop: Drop = drop_logged, *, max_pending: int = MAX_PENDING) -> None:
        self._drop = drop
        self._max_pending = max_pending
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefix-drops")
        self._pending: list[Future[None]] = []

    def submit(self, bootstrap: str, prefix: str, client_options: Mapping[str, Any] | None = None) -> None:
        """Have `prefix` dropped; returns at once unless `max_pending` drops are still waiting (then once the oldest is done).

        `client_options` are resolved by the caller, on the test's thread: the drop must not read settings while a
        later test changes the environment.
        """
        self._pending = [f for f in self._pending if not f.done()]
        while len(self._pending) >= self._max_pending:
            self._pending.pop(0).result()
        self._pending.append(self._pool.submit(lambda: asyncio.run(self._drop(bootstrap, prefix, client_options=client_options))))

    def wait(self) -> None:
        """Return once every prefix handed over so far is dropped (before a test that needs the broker to itself)."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        """Wait for every drop, then end the thread (the session's end: no prefix is left on the broker)."""
        self.wait()
        self._pool.shutdown(wait=True)
