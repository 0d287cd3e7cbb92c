"""The planner's own Python per event, in one process: handlers, state machine and repository, without broker or database.

Prints figures; never asserts. The planner's handlers run the e2e bench's ticket mix (password,
delivery, a refund to a new payee and an account deletion, each refused once and handed off)
through `PostgresTaskRepository` over a stand-in pool that answers each statement as the database
would (the guarded write applies, the outbox ids come back), so the figure is the CPU of
deciding, serialising and signing the state (`StateSeal`, once per write) and building, signing
and encoding the events to publish (each once, before the outbox keeps it): what the planner
spends beside the kit's consume and publish paths and asyncpg's round trips.

    .venv/bin/python -m bench.planner_bench              # 300 tasks
    .venv/bin/python -m bench.planner_bench --tasks 2000
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.clients import emit_figures
from bench.e2e_bench import MIX
from schemas import (
    ActionDecided,
    ActionDecidedData,
    ActionProposedData,
    ActionResultData,
    ActionSucceeded,
    Envelope,
    Reason,
    ResultCost,
    RiskClass,
    TaskSubmitted,
    action_identity,
)
from servicekit import REPO_ROOT, Recorded, SigningKey, ToolCatalog, encode_signed
from servicekit.outlet import record_event
from services.planner import ActionIds, CostRates, PlannerHandlers, PlaybookStrategy, PostgresTaskRepository, StateSeal
from systems.seed import TICKETS
from tidegate.demo.tickets import ticket_task

_OUTBOX_TOPICS = re.compile(r"unnest\(\$(\d+)::text\[\]")  # the write's parameter of the topics of the events it stores


@dataclass
class StandInConnection:
    """Answers the repository's statements as PostgreSQL would when nothing races: every guarded write applies."""

    writes: int = 0
    state_bytes: int = 0
    statements: int = 0
    _next_id: int = 0
    _at: dict[str, tuple[int, int]] = field(default_factory=dict)  # per statement: where its state and its outbox topics are

    def _places(self, query: str, args: tuple[Any, ...]) -> tuple[int, int]:
        """The positions of the state's JSON and the outbox topics among the write's parameters, found once per statement."""
        state = next(i for i, a in enumerate(args) if isinstance(a, str) and a.startswith('{"task_id"'))
        topics = int(_OUTBOX_TOPICS.search(query)[1]) - 1  # type: ignore[index]
        return self._at.setdefault(query, (state, topics))

    async def fetchrow(self, query: str, *args: Any) -> dict[str, Any] | None:
        self.statements += 1
        if "INSERT INTO planner.outbox" not in query:
            return None  # a read: the task is unknown (the write path never reads when it wrote the task last)
        self.writes += 1
        state, topics_at = self._at.get(query) or self._places(query, args)
        self.state_bytes += len(args[state])
        topics = args[topics_at]
        ids = list(range(self._next_id, self._next_id + len(topics)))
        self._next_id += len(ids)
        return {"version": str(self.writes), "ids": ids}

    async def fetchval(self, query: str, *args: Any) -> Any:
        self.statements += 1
        return None

    async def execute(self, query: str, *args: Any) -> str:
        self.statements += 1
        return "DELETE"

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        self.statements += 1
        return []


@dataclass
class StandInPool(StandInConnection):
    """The pool the repository is given: one connection, itself."""

    @asynccontextmanager
    async def _acquired(self) -> Any:
        yield self

    def acquire(self) -> Any:
        return self._acquired()


@dataclass
class Driver:
    """Plays policy and executor for the planner: a step with alternatives is denied once, every other step allowed and run."""

    handlers: PlannerHandlers
    signer: SigningKey
    sent: list[tuple[str, Envelope]] = field(default_factory=list)
    cpu_s: float = 0.0
    events: int = 0

    async def timed(self, handler: Callable[[Any], Awaitable[None]], event: Envelope) -> None:
        start = time.process_time()
        await handler(event)
        self.cpu_s += time.process_time() - start
        self.events += 1

    async def run(self, task_id: str, ticket: Any) -> None:
        task = ticket_task(ticket, task_id=task_id)
        submitted = TaskSubmitted.build(task, source="bench")
        await self.timed(self.handlers.on_task, submitted)
        while self.sent:
            topic, event = self.sent.pop()
            if topic != "actions.proposed":
                return
            proposal: ActionProposedData = event.data
            deny = proposal.tool in ("issue_refund", "delete_customer_data")
            decided = ActionDecided.build(decision(proposal, "deny" if deny else "allow"), source="bench")
            await self.timed(self.handlers.on_decided, decided)
            if deny:
                continue
            result = ActionSucceeded.build(succeeded(proposal), source="bench")
            await self.timed(self.handlers.on_result, result)

    def record(self, topic: str, event: Envelope) -> Recorded:
        """The planner's outlet: each event signed and encoded as the service's bus does it, before it is stored."""
        return record_event(topic, event, lambda e: encode_signed(e, self.signer))

    async def publish_many(self, records: Sequence[Recorded]) -> None:
        self.sent.extend((r.topic, r.event) for r in records if r.event is not None)


def decision(p: ActionProposedData, outcome: str) -> ActionDecidedData:
    """What the policy would say about `p`."""
    code = "low_risk_write_allowed" if outcome == "allow" else "new_payee_blocked"
    return ActionDecidedData(
        **action_identity(p),
        tool=p.tool,
        args=p.args,
        action_digest="d",
        outcome=outcome,
        reasons=[Reason(code=code, policy_id="bench", message=f"because {code}")],
        policy_version="v1",
        latency_ms=1.0,
    )


def succeeded(p: ActionProposedData) -> ActionResultData:
    """The executor's result of `p`."""
    return ActionResultData(
        **action_identity(p),
        tool=p.tool,
        status="succeeded",
        result={"ok": True, "id": f"r-{p.action_id[:8]}"},
        attempts=1,
        duration_ms=3.0,
        cost=ResultCost(usd=0.0004),
    )


def mix_driver(pool: Any) -> Driver:
    """The planner's handlers over `PostgresTaskRepository` on `pool` (the stand-in or asyncpg's), signing as the service does."""
    catalog = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
    with tempfile.TemporaryDirectory() as keys:
        signer = SigningKey.load_or_create(Path(keys), "planner")
        seal = StateSeal(signer, Path(keys))  # each state written is signed, as the service does
    driver = Driver(handlers=None, signer=signer)  # type: ignore[arg-type]  # its handlers publish through it: set just below
    driver.handlers = PlannerHandlers(
        repo=PostgresTaskRepository(pool, CostRates(), seal=seal),
        strategy=PlaybookStrategy(catalog),
        out=driver,
        rates=CostRates(),
        read_only=frozenset(name for name, spec in catalog.items() if spec.risk is RiskClass.READ),
        ids=ActionIds(b"bench-planner-secret".ljust(32, b".")),
    )
    return driver


async def run_mix(driver: Driver, prefix: str, n_tasks: int) -> None:
    """`n_tasks` tasks of the e2e bench's ticket mix, ids `prefix-0`, `prefix-1`, ..."""
    tickets = {t.ticket_id: t for t in TICKETS}
    for i in range(n_tasks):
        await driver.run(f"{prefix}-{i}", tickets[MIX[i % len(MIX)]])


async def bench(n_tasks: int) -> dict[str, Any]:
    """Run `n_tasks` of the mix; figures per event and per proposed action."""
    pool = StandInPool()
    driver = mix_driver(pool)
    await run_mix(driver, "bench", n_tasks)
    return {
        "tasks": n_tasks,
        "events": driver.events,
        "cpu_us_per_event": round(driver.cpu_s / driver.events * 1e6, 1),
        "statements_per_event": round(pool.statements / driver.events, 3),
        "state_json_bytes_per_write": round(pool.state_bytes / max(1, pool.writes)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=None, help="Tasks of the mix to run (default 300).")
    parser.add_argument("--rounds", type=int, default=3, help="Runs; the best is printed beside each (default 3).")
    parser.add_argument("--full", action="store_true", help="3,000 tasks instead of 300.")
    args = parser.parse_args()
    tasks = args.tasks if args.tasks is not None else 3000 if args.full else 300
    runs = [asyncio.run(bench(tasks)) for _ in range(args.rounds)]
    for r in runs:
        print(
            f"{r['events']} events: {r['cpu_us_per_event']} µs CPU per event, {r['statements_per_event']} statements per event, "
            f"{r['state_json_bytes_per_write']} bytes of state per write"
        )
    best = min(runs, key=lambda r: r["cpu_us_per_event"])
    emit_figures("planner_bench", best)


if __name__ == "__main__":
    main()
