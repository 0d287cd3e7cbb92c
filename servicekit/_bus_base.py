"""What every part of the bus shares: its settings and state, and how it meets failure (the one layer that retries).

`servicekit.bus.Bus` is composed of parts, each a job that subclasses this base: the publish path
(`_bus_publish`), dead letters (`_bus_deadletter`), the handling of one record (`_bus_handle`), the end of a
polled batch (`_bus_acks`), subscriptions and their consumers (`_bus_subscribe`); `bus.py` adds the lifecycle.
Every part logs as `servicekit.bus`, so an operator reads the bus's lines under one name wherever they come from.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from servicekit.authority import Authority
from servicekit.commits import Commits
from servicekit.db_outage import retry_level
from servicekit.intake import Bounds, ErrorKind, ProducerDead, classify
from servicekit.liveness import Liveness
from servicekit.polling import Poller
from servicekit.producer import Producer
from servicekit.settings import IDLE_FETCH_MAX_WAIT_MS, PARTITION_FETCH_BYTES
from servicekit.signing import SigningKey

if TYPE_CHECKING:
    from servicekit._bus_subscribe import Subscription

__all__ = ["MAX_BACKOFF_S", "BusBase", "Handler", "log"]

log = logging.getLogger("servicekit.bus")

T = TypeVar("T")
MAX_BACKOFF_S = 5.0
Handler = Callable[[Any], Awaitable[None]]


@dataclass
class BusBase:
    """What every part of `Bus` holds: its prefix, its name, its producer (`servicekit.producer`), its consumers' state."""

    producer: Producer
    service: str
    bootstrap: str
    prefix: str = "tidegate."
    bounds: Bounds = field(default_factory=Bounds)
    signer: SigningKey | None = None  # signs every event this bus publishes (docs/security/signatures.md)
    authority: Authority | None = None  # checks every event's signature before a handler sees it
    commit_interval_s: float = 0.5  # handled offsets are committed at most this often (`servicekit.commits`)
    fetch_max_wait_ms: int = IDLE_FETCH_MAX_WAIT_MS  # how long the broker holds an idle fetch (`KitSettings.fetch_max_wait_ms`)
    busy_fetch_max_wait_ms: int = 100  # the same while a consumer's batches take long (`KitSettings.busy_fetch_max_wait_ms`)
    max_partition_fetch_bytes: int = PARTITION_FETCH_BYTES  # per partition and fetch (`KitSettings.max_partition_fetch_bytes`)
    rejected: int = field(default=0, init=False)
    liveness: Liveness = field(default_factory=Liveness, init=False)
    # Called with each transient error before the retry (the runner discards the pool's connections on a database error).
    on_transient: Callable[[BaseException], Awaitable[None]] | None = field(default=None, init=False)
    # Set when the producer can no longer deliver: the process exits for its supervisor to restart it.
    failure: BaseException | None = field(default=None, init=False)
    # Handlers waiting out a transient error's backoff now: while one of a service's consumers is held so, what another
    # handler waits for from it (the policy: a task's request) may still come (`PolicyService.inputs_held`).
    handlers_retrying: int = field(default=0, init=False)
    failed: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    # Set as `stop` begins: a handler between two steps (the executor between two attempts) starts no new one.
    stopping: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    positions: dict[tuple[str, int], int] = field(default_factory=dict, init=False)
    # Records of each topic (full name) decoded or dead-lettered so far, counted one by one: what a start waiting on a long
    # topic counts as progress (`wait_caught_up(while_progressing=True)`); `positions` move only once a polled batch is done.
    records_read: dict[str, int] = field(default_factory=dict, init=False)
    # One consumer of no group that reads topics' end offsets for `wait_caught_up`, opened at its first use.
    _end_reader: Any = field(default=None, init=False)
    _end_reader_opening: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    _end_partitions: dict[str, list[Any]] = field(default_factory=dict, init=False)  # each topic's, once known
    subscriptions: list[str] = field(default_factory=list, init=False)
    _routes: list[Subscription] = field(default_factory=list, init=False)
    _commits: list[Commits] = field(default_factory=list, init=False)  # one per consumer of a group
    _started: bool = field(default=False, init=False)
    pollers: list[Poller] = field(default_factory=list, init=False)  # one per Kafka consumer, started with the bus
    # Consumers that read only what comes after start, with their topics.
    _from_latest: list[tuple[Poller, list[str]]] = field(default_factory=list, init=False)
    # Where a start resumes `control` and `directory` (`servicekit.start_checkpoint`); None: they are read whole.
    checkpoint_dir: Path | None = None
    _kept: dict[tuple[str, int], dict[int, Any]] = field(default_factory=dict, init=False)  # accepted records, by offset
    _last_read: dict[tuple[str, int], tuple[int, str]] = field(default_factory=dict, init=False)  # offset, SHA-256

    def client_options(self) -> dict[str, Any]:
        """Login options of the producer's principal, for the raw aiokafka clients this bus opens."""
        return self.producer.login

    def topic(self, name: str) -> str:
        """Full topic name of catalog topic `name`."""
        return f"{self.prefix}{name}"

    async def producer_dead(self, exc: BaseException) -> None:
        """The producer cannot deliver again: flag the process as failed (it exits non-zero) and hold the batch, uncommitted."""
        if self.failure is None:
            log.critical("%s: producer can no longer deliver (%r); exiting for the supervisor to restart", self.service, exc)
            self.failure = exc
            self.failed.set()
        await asyncio.Event().wait()  # until the process stops and cancels this handler; nothing is committed
        raise ProducerDead(str(exc))  # pragma: no cover  (unreachable: the wait ends only by cancellation)

    async def retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt` until it succeeds; transient errors are retried with capped backoff, forever.

        An error about the record itself is raised for the caller to dead-letter; a dead producer
        stops the process (`producer_dead`). This is the one layer that retries handlers.
        """
        delay = 0.1
        while True:
            try:
                return await attempt()
            except Exception as exc:
                kind = classify(exc)
                if kind is ErrorKind.RECORD:
                    raise
                if kind is ErrorKind.PRODUCER_DEAD:
                    await self.producer_dead(exc)
                if self.on_transient is not None:
                    await self.on_transient(exc)
                self.liveness.retrying(exc)
                log.log(retry_level(exc), "%s: transient error on %s, retrying in %.1fs: %r", self.service, what, delay, exc)
                self.handlers_retrying += 1
                try:
                    await asyncio.sleep(delay)
                finally:
                    self.handlers_retrying -= 1
                delay = min(delay * 2, MAX_BACKOFF_S)
