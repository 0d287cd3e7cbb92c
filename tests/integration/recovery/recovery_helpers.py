"""The five services in process under a supervisor, a load of demo tasks, and what is checked after a fault."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from signers import SigningBus

from schemas import EventRejected, TaskCompleted, TaskFailed, TaskSubmitted
from servicekit import ADMIN, KitSettings, ServiceProcess
from systems.seed import TICKETS
from tidegate.demo.tickets import ticket_task
from tidegate.ops.recorded import recorded_window

log = logging.getLogger(__name__)

# Demo tickets whose task closes without a human (T-1002's refund over the threshold and T-1009's refund to a payee
# named by untrusted text wait for an approver).
UNATTENDED = tuple(t for t in TICKETS if t.ticket_id not in ("T-1002", "T-1009"))


def _builders(kit: KitSettings) -> dict[str, Callable[[], Any]]:
    from services.approval.app import build as build_approval
    from services.approval.settings import ApprovalSettings
    from services.audit.app import build as build_audit
    from services.executor.app import build as build_executor
    from services.planner.app import build as build_planner
    from services.policy.app import build as build_policy

    return {
        "policy": lambda: build_policy(kit),
        "planner": lambda: build_planner(kit),
        "executor": lambda: build_executor(kit),
        "approval": lambda: build_approval(kit, ApprovalSettings(http_port=0)),
        "audit": lambda: build_audit(kit),
    }


def _process(service: Any) -> ServiceProcess:
    process: ServiceProcess = getattr(service, "process", service)  # the audit wraps its process
    return process


@dataclass
class Supervisor:
    """What `tidegate up` does, in process: a service that says it can make no progress (exit 75) is stopped and built anew."""

    kit: KitSettings
    services: dict[str, Any] = field(default_factory=dict)
    restarts: Counter[str] = field(default_factory=Counter)
    reasons: list[str] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        """Start the five services and watch each."""
        for name, build in _builders(self.kit).items():
            self.services[name] = build()
            await self.services[name].start()
            self._tasks.append(asyncio.create_task(self._supervise(name, build)))

    async def _supervise(self, name: str, build: Callable[[], Any]) -> None:
        while True:
            reason = await _process(self.services[name]).watch()
            log.warning("supervisor: %s can make no progress (%s); restarting it", name, reason)
            self.restarts[name] += 1
            self.reasons.append(f"{name}: {reason}")
            with contextlib.suppress(Exception):  # a service that stalled may not stop cleanly: it is replaced anyway
                await asyncio.wait_for(self.services[name].stop(), 30)
            delay = 0.5
            while True:  # the dependency may still be down: start again until it comes up
                try:
                    self.services[name] = build()
                    await self.services[name].start()
                    break
                except Exception as exc:
                    log.warning("supervisor: %s did not start (%r); again in %.1fs", name, exc, delay)
                    with contextlib.suppress(Exception):
                        await self.services[name].stop()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)

    async def stop(self) -> None:
        """Stop watching, then stop every service."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for service in reversed(list(self.services.values())):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(service.stop(), 30)


async def submit(kit: KitSettings, count: int, label: str) -> set[str]:
    """Submit `count` demo tasks (tickets that close without a human) from a fresh client; their task ids."""
    client = SigningBus(kit, f"load-{label}")
    await client.start()
    run = uuid.uuid4().hex[:6]
    ids = set()
    try:
        for i in range(count):
            ticket = UNATTENDED[i % len(UNATTENDED)]
            data = ticket_task(ticket, tenant_id="acme", task_id=f"rec-{label}-{run}-{i}-{ticket.ticket_id}")
            await client.publish("tasks", TaskSubmitted.build(data, source="tidegate/test"))
            ids.add(data.task_id)
    finally:
        await client.stop()
    return ids


async def closed_tasks(kit: KitSettings, task_ids: set[str], timeout_s: float, enough: int | None = None) -> dict[str, list[Any]]:
    """Each task's outcomes on `tasks.outcomes` once `enough` tasks (default: all) have one, or what there is at the deadline."""
    enough = len(task_ids) if enough is None else enough
    deadline = time.monotonic() + timeout_s
    while True:
        found: dict[str, list[Any]] = {}
        with contextlib.suppress(Exception):  # the broker may still be coming back
            window = await recorded_window(kit, None, None, topics=("tasks.outcomes",), principal=ADMIN)
            for event in window.of(TaskCompleted, TaskFailed):
                if event.data.task_id in task_ids:
                    found.setdefault(event.data.task_id, []).append(event)
        if len(found) >= enough or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


async def dead_letters(kit: KitSettings) -> list[EventRejected]:
    """Everything the services dead-lettered under the kit's prefix."""
    window = await recorded_window(kit, None, None, topics=("deadletter",), principal=ADMIN)
    return list(window.of(EventRejected))


def skip_sequences(producer: Any, by: int = 5) -> int:
    """Advance a live idempotent producer's sequence on each partition it wrote, as a batch that expired in an outage leaves it.

    The broker then refuses its next batch there with `OutOfOrderSequenceNumber`, and aiokafka's sender
    task dies of it (aio-libs/aiokafka#1017): the producer can deliver nothing again. Returns the partitions.
    """
    sequences = producer._txn_manager._sequence_numbers
    for tp in list(sequences):
        producer._txn_manager.increment_sequence_number(tp, by)
    return len(sequences)


def kit_producer(service: Any) -> Any:
    """The aiokafka producer of a service's bus (whose sender task `servicekit.producer` watches)."""
    return _process(service).bus.producer.client
