"""Test prefixes made and dropped on a thread of their own: a test does not wait while the broker creates or deletes its topics.

Creating a test's topics with their rights (`servicekit.ensure_topics`) and deleting them (`servicekit.drop_prefix`) is
round trips to the broker's controller, mostly waiting: done in the setup and teardown of every live test, it added both
waits to each of them. The `topics` fixture hands its prefix here to be dropped, and the next test's prefix is made here
while the test before it ends (`prepare`), so that test finds its topics made (on a 2-core CI machine the live suite keeps
one core busy, so this takes the idle one). At most `MAX_PENDING` prefixes wait to be dropped (a broker slower than the
tests makes the teardown wait, so partitions never pile up), and the session ends only once every prefix is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

MAX_PENDING = 2

Drop = Callable[..., Awaitable[Any]]
Make = Callable[..., Awaitable[Any]]

log = logging.getLogger(__name__)


async def drop_logged(bootstrap: str, prefix: str, *, client_options: Mapping[str, Any] | None = None) -> None:
    """Drop every topic under `prefix` and the rights granted on it; a failure is logged, never raised (as the teardown did)."""
    from servicekit import drop_prefix

    try:
        await drop_prefix(bootstrap, prefix, client_options=client_options)
    except Exception:  # cleanup must never fail a test
        log.warning("could not drop test prefix %s", prefix, exc_info=True)


async def make_topics(bootstrap: str, prefix: str, names: Sequence[str], *, client_options: Mapping[str, Any] | None = None) -> None:
    """What the `topics` fixture makes: the topics `names` under `prefix`, with the prefix's rights (`servicekit.ensure_topics`)."""
    from servicekit import ensure_topics

    await ensure_topics(bootstrap, prefix, names, client_options=client_options)


class PrefixDrops:
    """Makes and drops prefixes one after the other on one thread (an event loop of its own each), while the tests go on."""

    def __init__(self, drop: Drop = drop_logged, make: Make = make_topics, *, max_pending: int = MAX_PENDING) -> None:
        self._drop = drop
        self._make = make
        self._max_pending = max_pending
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefix-drops")
        self._pending: list[Future[None]] = []
        self._prepared: list[tuple[str, str, Mapping[str, Any], Future[None]]] = []  # made ahead, not taken yet
        self._taken: dict[str, Future[None]] = {}

    def _run(self, coroutine: Callable[[], Awaitable[Any]]) -> Future[None]:
        return self._pool.submit(lambda: asyncio.run(coroutine()))  # type: ignore[arg-type]

    def submit(self, bootstrap: str, prefix: str, client_options: Mapping[str, Any] | None = None) -> None:
        """Have `prefix` dropped; returns at once unless `max_pending` drops are still waiting (then once the oldest is done).

        `client_options` are resolved by the caller, on the test's thread: the drop must not read settings while a
        later test changes the environment.
        """
        self._pending = [f for f in self._pending if not f.done()]
        while len(self._pending) >= self._max_pending:
            self._pending.pop(0).result()
        self._pending.append(self._run(lambda: self._drop(bootstrap, prefix, client_options=client_options)))

    def prepare(self, bootstrap: str, names: Sequence[str], client_options: Mapping[str, Any]) -> None:
        """Start making a fresh prefix with the topics `names` and its rights, for the next test that asks for `topics`."""
        prefix = f"test-{uuid.uuid4().hex[:10]}."
        future = self._run(lambda: self._make(bootstrap, prefix, names, client_options=client_options))
        self._prepared.append((bootstrap, prefix, client_options, future))

    def take(self) -> str | None:
        """A prefix `prepare` started and nobody took yet (None if there is none); `made` says once it is made."""
        if not self._prepared:
            return None
        _, prefix, _, future = self._prepared.pop(0)
        self._taken[prefix] = future
        return prefix

    def made(self, prefix: str) -> bool:
        """Wait until `prefix` is made if it was taken from here: False if not, or if the broker refused (logged; the caller makes it)."""
        if prefix not in self._taken:
            return False
        try:
            self._taken.pop(prefix).result()
        except Exception:
            log.warning("test prefix %s was not made ahead; making it now", prefix, exc_info=True)
            return False
        return True

    def wait(self) -> None:
        """Return once every prefix handed over is dropped and every one started is made (before a test needing the broker to itself)."""
        pending, self._pending = self._pending, []
        for future in [*pending, *(f for *_, f in self._prepared)]:
            future.exception()

    def close(self) -> None:
        """Drop what was made ahead and never taken, wait for every drop, then end the thread (the session's end: no prefix is left)."""
        prepared, self._prepared = self._prepared, []
        for bootstrap, prefix, options, _ in prepared:
            self._pending.append(self._run(lambda b=bootstrap, p=prefix, o=options: self._drop(b, p, client_options=o)))
        self.wait()
        self._pool.shutdown(wait=True)
