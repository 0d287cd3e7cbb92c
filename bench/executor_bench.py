"""The executor's own CPU per executed action, in one process, against the real database and the demo's systems.

Prints figures; never asserts. The executor is built by its wiring point (`services.executor.build`,
the service's pools and stores) on a database of its own (created with the PostgreSQL superuser,
migrated, seeded, dropped at the end); only the broker is left out: results are signed and encoded
by the service's bus (`Bus.record`) and kept with their claims, as in the service, then dropped.
Each task runs the e2e bench's triage steps in order (tag the ticket, whose undo reads it first;
add a note; draft a reply), `--concurrency` tasks at once as the service's lanes do. The figure is
the process's CPU (`time.process_time`) over the actions: the executor's Python, asyncpg's and the
event loop's work per action, without Kafka.

    .venv/bin/python -m bench.executor_bench                  # 300 tasks, 900 actions
    .venv/bin/python -m bench.executor_bench --tasks 1000
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.clients import emit_figures
from schemas import ActionAuthorized, ActionAuthorizedData, Authorization, Envelope
from servicekit import Bus, KitSettings, Recorded, SigningKey, action_digest, authorization_message
from servicekit.db import open_pool
from servicekit.dbroles import with_database
from services.executor import build
from systems.seed import TICKETS, seed_demo
from tidegate.database import local_superuser_url, migrate

TENANT = "acme"
TRIAGE = ("T-1007", "T-1008", "T-1003", "T-1004")  # the e2e bench's mix


def _steps(ticket_id: str, n: int) -> list[tuple[str, dict[str, Any]]]:
    """The triage steps every e2e task runs: tag (undo reads the ticket first), note, reply draft."""
    return [
        ("tag_ticket", {"ticket_id": ticket_id, "tags": ["bench", f"b{n % 7}"]}),
        ("add_internal_note", {"ticket_id": ticket_id, "note": f"bench note {n}"}),
        ("draft_reply", {"ticket_id": ticket_id, "body": f"Hi, about your ticket ({n})."}),
    ]


def _authorize(key: SigningKey, tool: str, args: dict[str, Any], task_id: str, step: int) -> ActionAuthorized:
    now = datetime.now(UTC)
    data = ActionAuthorizedData(
        action_id=f"a-{uuid.uuid4().hex[:16]}",
        task_id=task_id,
        tenant_id=TENANT,
        step=step,
        tool=tool,
        args=args,
        authorization=Authorization(
            via="policy",
            policy_version="sha256:bench",
            action_digest=action_digest(TENANT, tool, args),
            issued_at=now,
            expires_at=now + timedelta(hours=1),
            key_id=key.key_id,
            signature="",
        ),
    )
    signed = data.authorization.model_copy(update={"signature": key.sign(authorization_message(data))})
    return ActionAuthorized.build(data.model_copy(update={"authorization": signed}), source="tidegate/policy")


async def run(n_tasks: int, concurrency: int, admin_url: str) -> dict[str, Any]:
    """Execute `n_tasks` triage tasks in process; the figures."""
    base = KitSettings()
    dbname = f"tidegate_exbench_{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="tidegate-exbench-"))
    kit = KitSettings(database_url=with_database(base.database_url, dbname), keys_dir=tmp / "keys", run_dir=tmp / "run")
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f"CREATE DATABASE {dbname} OWNER tidegate")
    try:
        await migrate(kit)
        seed = await asyncpg.create_pool(kit.operator_database_url, min_size=1, max_size=2)
        await seed_demo(seed, (TENANT,))
        await seed.close()
        return await _measure(kit, n_tasks, concurrency, admin)
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        await admin.close()


async def _transactions(admin: asyncpg.Connection, dbname: str) -> int:
    """Transactions the database has seen (each statement outside a transaction is one), as far as its backends reported them."""
    await admin.execute("SELECT pg_stat_clear_snapshot()")
    return int(await admin.fetchval("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1", dbname))


@dataclasses.dataclass
class Unsent:
    """The executor's outlet without a broker: results are signed and encoded by its bus, as in the service; their sizes are kept."""

    bus: Bus
    sizes: list[int]

    def record(self, topic: str, event: Envelope) -> Recorded:
        return self.bus.record(topic, event)

    async def publish_many(self, records: Sequence[Recorded]) -> None:
        self.sizes.extend(len(r.value) for r in records)


async def _measure(kit: KitSettings, n_tasks: int, concurrency: int, admin: asyncpg.Connection) -> dict[str, Any]:
    policy = SigningKey.load_or_create(kit.keys_dir, "policy")
    published: list[int] = []

    dbname = kit.database_url.rsplit("/", 1)[-1].split("?")[0]
    transactions = await _transactions(admin, dbname)
    process = build(kit)
    assert process.pool is not None
    await open_pool(process.pool, "the executor's database")
    executor = dataclasses.replace(process.executor, out=Unsent(process.bus, published), ready=None)
    if executor.context_pool is not None:
        await open_pool(executor.context_pool, "the systems' database")
    tickets = [t for t in TICKETS if t.ticket_id in TRIAGE]
    tasks = [
        [
            _authorize(policy, tool, args, f"bench-{i}", step)
            for step, (tool, args) in enumerate(_steps(tickets[i % len(tickets)].ticket_id, i), 1)
        ]
        for i in range(n_tasks)
    ]
    slots = asyncio.Semaphore(concurrency)

    async def lane(events: list[ActionAuthorized]) -> None:
        for event in events:
            async with slots:
                await executor.handle(event)

    await asyncio.gather(*(lane(t) for t in tasks[:10]))  # warm up: statements prepared, entrypoints imported
    measured = tasks[10:]
    actions = sum(len(t) for t in measured)
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(lane(t) for t in measured))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await process.pool.close()
    if executor.context_pool is not None:
        await executor.context_pool.close()
    await asyncio.sleep(1)  # a backend reports its counts as it exits
    transactions = await _transactions(admin, dbname) - transactions
    return {
        "actions": actions,
        "executor_cpu_us_per_action": round(cpu / actions * 1e6, 1),
        "actions_per_s": round(actions / wall, 1),
        # Over every action, the warm-up's too: each is one of the same triage steps.
        "database_transactions_per_action": round(transactions / sum(len(t) for t in tasks), 2),
        "results_published": len(published),
    }


def main() -> None:
    """Command line: `python -m bench.executor_bench [--tasks N | --full] [--concurrency C]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=None, help="Triage tasks of three actions each, 10 more warm up first (default 300).")
    parser.add_argument("--full", action="store_true", help="3,000 tasks instead of 300.")
    parser.add_argument("--concurrency", type=int, default=8, help="Tasks in flight at once (the executor's default lanes).")
    parser.add_argument(
        "--admin-url", default=None, help="A superuser DSN to create and drop the bench database (the local cluster's by default)."
    )
    args = parser.parse_args()
    tasks = args.tasks if args.tasks is not None else 3000 if args.full else 300
    figures = asyncio.run(run(tasks + 10, args.concurrency, args.admin_url or local_superuser_url(KitSettings())))
    emit_figures("executor_bench", figures)


if __name__ == "__main__":
    main()
