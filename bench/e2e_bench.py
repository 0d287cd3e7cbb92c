"""End-to-end benchmark of the demo workflow: tasks/s, actions/s, proposal→result latency, CPU and memory per service, cost.

Prints figures; never asserts. Run with the infrastructure up (`tidegate infra up`):

    .venv/bin/python -m bench.e2e_bench                 # short: 20 tasks at 2/s (light load), then 300 at 5/s
    .venv/bin/python -m bench.e2e_bench --full          # 5 minutes open loop at 118 tasks/s (~500 actions/s)
    .venv/bin/python -m bench.e2e_bench --rate 0 --tasks 1000   # a burst
    .venv/bin/python -m bench.e2e_bench --ramp 10,14,18,22,26,30 --light 0 --idle 0   # the most it holds, then 5 minutes of it
    .venv/bin/python -m bench.e2e_bench --rate 10 --tasks 600 --light 0 --idle 0 --profile-broker b.jfr   # what the broker's CPU goes to

It starts the five services as processes (`tidegate up --detach`) on a fresh topic prefix and a
database of their own (created with the PostgreSQL superuser, dropped at the end), seeds the systems
of record, measures the services' CPU with no load at all (`--idle` seconds: what they spend waiting),
submits a light-load phase, then N `support_triage` tasks open loop at a steady rate, and waits for
every `task.completed` / `task.failed` of each phase. CPU per governed action is the five services'
CPU time (from /proc) over the steady phase divided by its proposed actions, printed as it is and
beyond what the services spend idle over the same time (at a low rate, idle work divided by few
actions would otherwise make most of the figure). The Kafka broker and PostgreSQL share the cores, so
their CPU over the phase is measured too (from /proc, by the pid files of `infra up`; PostgreSQL's also
by the service role each backend serves): the whole machine's CPU per action, and the rate it allows.
The mix is the demo's tickets that end without a human: ordinary triage (password,
delivery), a refund to a new payee (denied, handed off) and an account deletion (human-only,
handed off); each task triages a ticket of its own, a copy of one of those (as a helpdesk's tasks each
come with their ticket: four tickets triaged over and over piled notes and drafts onto each, which
every later read of the ticket carried, and a long run slowed as they grew). A run of more than a
minute prints its latency minute by minute, as it holds or falls behind. Its topics and database are
deleted at the end. Latency is the broker timestamp of an `action.proposed` to that of its result.

With `--ramp R1,R2,...` the rate is found in the same run instead of given: a phase submits R1 tasks/s for
`--step-s` seconds, then R2, and so on; a step holds when the p99 of the actions proposed in it (proposal →
result; a denied or escalated action has none) is within `--p99-ms`, and the ramp's every task closed. The
highest rate held with every step below it held is this machine's capacity at that latency, which a fixed rate
cannot show (on a slower hour or a busier machine a rate near the knee is simply overloaded, and its p99 says
only that). The steady phase then runs at that rate for `--hold-s` seconds (issue #12's five minutes): whether
a minute's step holds for five.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench import broker_profile, db_profile, profile
from bench.clients import drop_bench_prefix, emit_figures, kafka_options
from schemas import TaskSubmitted, decode, encode, headers_for
from servicekit import KitSettings, catalog_topic_names, ensure_topics, sign_as_producer
from servicekit.dbroles import DEFAULT_ROLE_PREFIX, with_database
from servicekit.partitions import partitions_of
from systems.seed import TICKETS, Ticket, insert_tickets, seed_demo
from tidegate.database import local_superuser_url, migrate
from tidegate.demo.tickets import ticket_task

MIX = ("T-1007", "T-1008", "T-1003", "T-1004")
FIRST_BENCH_TICKET = 2_000_000  # the i-th task's ticket is T-<this + i>, a copy of MIX[i % 4]
SERVICES = ("policy", "approval", "executor", "planner", "audit")
CLK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name: [11] and [12] are user and kernel CPU ticks, [13] and
    [14] those of the children the process reaped."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _status(pid: int) -> dict[str, str]:
    return dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)


def proc_stats(pid: int) -> tuple[float, int, int]:
    """(CPU seconds, RSS bytes, peak RSS bytes) of a process from /proc."""
    fields = _stat(pid)
    cpu = (int(fields[11]) + int(fields[12])) / CLK
    status = _status(pid)
    kib = lambda key: int(status.get(key, "0 kB").split()[0]) * 1024  # noqa: E731
    return cpu, kib("VmRSS"), kib("VmHWM")


def service_pids(supervisor: int) -> dict[str, int]:
    """The service processes the supervisor started, by name (from their command lines)."""
    out: dict[str, int] = {}
    for child in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split():
        cmd = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        name = cmd[-2].decode() if len(cmd) >= 2 else ""
        if name in SERVICES:
            out[name] = int(child)
    return out


async def collect(kit: KitSettings, n_tasks: int, timeout_s: float, started: asyncio.Event) -> dict[str, Any]:
    """Read proposals, results and outcomes from the topics' current ends until every task has an outcome."""
    names = ["actions.proposed", "actions.results", "tasks.outcomes"]
    consumer = AIOKafkaConsumer(enable_auto_commit=False, max_partition_fetch_bytes=8 << 20, **kafka_options(kit))
    await consumer.start()
    proposed: dict[str, int] = {}
    results: dict[str, int] = {}
    outcomes: list[Any] = []
    last_ts = 0
    try:
        tps = await partitions_of(consumer, [kit.topic_prefix + n for n in names])
        consumer.assign(tps)
        for tp, end in (await consumer.end_offsets(tps)).items():
            consumer.seek(tp, end)
        started.set()
        deadline = time.monotonic() + timeout_s
        while len(outcomes) < n_tasks and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, records in batch.items():
                name = tp.topic.removeprefix(kit.topic_prefix)
                for r in records:
                    event = decode(name, r.value)
                    if name == "actions.proposed":
                        proposed[event.data.action_id] = r.timestamp
                    elif name == "actions.results":
                        results[event.data.action_id] = r.timestamp
                    else:
                        outcomes.append(event)
                        last_ts = max(last_ts, r.timestamp)
    finally:
        await consumer.stop()
    return {"proposed": proposed, "results": results, "outcomes": outcomes, "last_ts": last_ts}


def bench_ticket(i: int) -> Ticket:
    """The i-th task's own ticket: the mix's ticket for it, under an id of its own."""
    return replace(next(t for t in TICKETS if t.ticket_id == MIX[i % len(MIX)]), ticket_id=f"T-{FIRST_BENCH_TICKET + i}")


def by_minute(proposed: dict[str, int], results: dict[str, int], width_s: float = 60.0) -> list[tuple[int, float, float, bool]]:
    """Proposal → result latency by the window (of `width_s`) its proposal fell in: (count, p50, p99, whole) per window.

    A sustained run holds its rate only if no window falls behind: a table that grows with every action shows as a
    p99 that climbs window after window, which the run's one p99 hides. `whole` is False for the last window when
    the run's proposals end inside it: a few seconds' tail, not a minute.
    """
    made = [proposed[a] for a in results if a in proposed]
    if not made:
        return []
    start, end = min(made), max(made)
    windows: dict[int, list[float]] = {}
    for action, done in results.items():
        if action in proposed:
            windows.setdefault(int((proposed[action] - start) / 1000 / width_s), []).append(done - proposed[action])
    return [(len(v), pct(v, 0.5), pct(v, 0.99), start + (k + 1) * width_s * 1000 <= end) for k, v in sorted(windows.items())]


class Ramp(NamedTuple):
    """`--ramp`: the rates (tasks/s) to step through, each for `step_s`; the latency a step must keep; the hold after it."""

    rates: tuple[float, ...]
    step_s: float
    p99_ms: float
    hold_s: float


def ramp_offsets(rates: Sequence[float], step_s: float) -> list[float]:
    """When to send each task (seconds from the start) for a rate that steps up: `rates[k]` tasks/s for `step_s` each."""
    offsets: list[float] = []
    for k, rate in enumerate(rates):
        offsets += [k * step_s + i / rate for i in range(round(rate * step_s))]
    return offsets


class Step(NamedTuple):
    """One step of a ramp: the actions proposed while it ran, and whether they kept within the latency limit."""

    rate: float
    actions: int
    executed: int
    actions_per_s: float
    p50_ms: float
    p99_ms: float
    held: bool


def by_step(
    proposed: dict[str, int], results: dict[str, int], start_ms: float, rates: Sequence[float], step_s: float, p99_ms: float
) -> list[Step]:
    """The ramp's steps, each the actions proposed (broker time) while it submitted; held: their p99 within `p99_ms`.

    The p99 is of the actions executed (a denied or escalated action has no result); whether every task closed is
    the caller's to check (`find_capacity`: a run that timed out claims no step). An action is counted in the step
    its proposal fell in, not its task's: a task's later actions follow the results of its earlier ones, and they
    load the machine when they are proposed.
    """
    lat: list[list[float]] = [[] for _ in rates]
    counts = [0 for _ in rates]
    for action, at in proposed.items():
        k = int((at - start_ms) / 1000 / step_s)
        if 0 <= k < len(rates):
            counts[k] += 1
            if action in results:
                lat[k].append(results[action] - at)
    steps = []
    for rate, n, done in zip(rates, counts, lat, strict=True):
        p99 = pct(done, 0.99)
        steps.append(Step(rate, n, len(done), n / step_s, pct(done, 0.5), p99, bool(done) and p99 <= p99_ms))
    return steps


def capacity(steps: Sequence[Step]) -> Step | None:
    """The highest step held with every step before it held; None when the first did not hold."""
    found = None
    for step in steps:
        if not step.held:
            break
        found = step
    return found


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def submit(
    kit: KitSettings, tasks: list[Any], rate: float, timeout_s: float, offsets: Sequence[float] | None = None
) -> dict[str, Any]:
    """Submit `tasks` open loop at `rate` tasks/s (0: all at once) or each at its `offsets` (s from the start); read every outcome."""
    started = asyncio.Event()
    collector = asyncio.create_task(collect(kit, len(tasks), timeout_s, started))
    await started.wait()
    producer = AIOKafkaProducer(acks="all", linger_ms=5, max_batch_size=256 * 1024, **kafka_options(kit))
    await producer.start()
    t0_wall = time.time()
    t0 = time.monotonic()
    for i, task in enumerate(tasks):
        if offsets is not None:
            await asyncio.sleep(max(0.0, t0 + offsets[i] - time.monotonic()))
        elif rate > 0:  # open loop at a fixed rate: latency then shows service time, not the backlog of a burst
            await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        ev = sign_as_producer(kit, TaskSubmitted.build(task, source="bench"))  # signed by the requester's client key
        await producer.send(
            kit.topic_prefix + "tasks", encode(ev), key=ev.key, headers=[(k, v.encode()) for k, v in headers_for(ev).items()]
        )
    await producer.flush()
    await producer.stop()
    submit_s = time.monotonic() - t0
    seen = await collector
    wall = time.monotonic() - t0
    elapsed = (seen["last_ts"] / 1000 - t0_wall) if seen["last_ts"] else wall
    lat = [seen["results"][a] - seen["proposed"][a] for a in seen["results"] if a in seen["proposed"]]
    return seen | {"submit_s": submit_s, "wall": wall, "elapsed": elapsed, "lat": lat, "start_ms": 1000 * t0_wall}


def infra_pids(kit: KitSettings) -> dict[str, list[int]]:
    """The local infrastructure's processes, where `infra up` keeps their pid files: the Kafka broker(s), PostgreSQL's postmaster."""
    found: dict[str, list[int]] = {}
    kafka = kit.infra_dir / "kafka"  # one broker's pid file there, each of several in its node-N/ (infra/infra.sh); never
    pid_files = [*kafka.glob("kafka.pid"), *sorted(kafka.glob("node-*/kafka.pid"))]  # into data/, whose topics come and go
    brokers = [int(text) for text in (f.read_text().strip() for f in pid_files) if text.isdigit()]
    postmaster = kit.infra_dir / "pg" / "data" / "postmaster.pid"
    if brokers:
        found["kafka"] = brokers
    if postmaster.exists():
        found["postgres"] = [int(postmaster.read_text().split()[0])]
    return {name: [pid for pid in pids if os.path.exists(f"/proc/{pid}")] for name, pids in found.items()}


def _ticks(pid: int, *, reaped: bool = False) -> int:
    fields = _stat(pid)
    return int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if reaped else 0)


async def backend_roles(admin_url: str) -> dict[int, str]:
    """PostgreSQL's backends now, by the role each serves (each service logs in as its own)."""
    conn = await asyncpg.connect(admin_url)
    try:
        return {r["pid"]: r["usename"] for r in await conn.fetch("SELECT pid, usename FROM pg_stat_activity WHERE usename IS NOT NULL")}
    finally:
        await conn.close()


def infra_cpu(pids: dict[str, list[int]], roles: dict[int, str]) -> tuple[dict[str, float], dict[int, tuple[str, float]]]:
    """CPU seconds so far of the broker(s) (all their threads) and of PostgreSQL: the postmaster with the children it
    reaped (backends that ended) and those alive now (backends, WAL writer, checkpointer...); and, by backend pid, the
    service whose role it serves (`roles`) and its CPU seconds, for PostgreSQL's backends alive now (`by_role`)."""
    totals: dict[str, float] = {}
    backends: dict[int, tuple[str, float]] = {}
    for name, roots in pids.items():
        ticks = 0
        for pid in roots:
            with contextlib.suppress(OSError):
                ticks += _ticks(pid, reaped=name == "postgres")
                if name == "postgres":
                    for child in map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split()):
                        with contextlib.suppress(OSError):
                            spent = _ticks(child)
                            ticks += spent
                            if roles.get(child, "").startswith(DEFAULT_ROLE_PREFIX):  # a service's login (not this benchmark's own)
                                role = roles[child].removeprefix(DEFAULT_ROLE_PREFIX)
                                backends[child] = (role, spent / CLK)
        totals[name] = ticks / CLK
    return totals, backends


def by_role(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds PostgreSQL's backends spent between two `infra_cpu` readings, by the role they serve.

    Per backend: one alive at both readings counts its difference, one started between them all it spent. One that
    ended between them is left out: its CPU went to the postmaster's reaped children, counted in the total but no
    longer by role (summing the roles' backends alive at each reading instead went negative once a pool closed an
    idle connection and opened another during a five-minute run).
    """
    spent: dict[str, float] = {}
    for pid, (role, seconds) in after.items():
        then = before.get(pid)
        spent[role] = spent.get(role, 0.0) + seconds - (then[1] if then is not None and then[0] == role else 0.0)
    return dict(sorted(spent.items()))


def write_latencies(path: Path, proposed: dict[str, int], results: dict[str, int]) -> None:
    """The steady phase's actions as CSV, by proposal time: `proposed_at` (UTC, ISO 8601, ms), `latency_ms`, `action_id`.

    For lining a latency tail up with what else happened then (PostgreSQL's checkpoints in its log, a service's own).
    """
    rows = sorted((proposed[a], results[a] - proposed[a], a) for a in results if a in proposed)
    with path.open("w") as out:
        out.write("proposed_at,latency_ms,action_id\n")
        for at, ms, action in rows:
            stamp = datetime.fromtimestamp(at / 1000, UTC).isoformat(timespec="milliseconds")
            out.write(f"{stamp},{ms},{action}\n")


def cpu_now(pids: dict[str, int]) -> dict[str, tuple[float, int, int]]:
    return {name: proc_stats(pid) for name, pid in pids.items() if os.path.exists(f"/proc/{pid}")}


def proc_counts(pid: int) -> dict[str, float]:
    """What a process did so far, from /proc: CPU in user mode and in the kernel (s), wake-ups (voluntary context switches)."""
    fields, status = _stat(pid), _status(pid)
    return {
        "user_s": int(fields[11]) / CLK,
        "sys_s": int(fields[12]) / CLK,
        "wakeups": int(status["voluntary_ctxt_switches"]),
    }


def counts_now(pids: dict[str, int]) -> dict[str, dict[str, float]]:
    return {name: proc_counts(pid) for name, pid in pids.items() if os.path.exists(f"/proc/{pid}")}


async def find_capacity(kit: KitSettings, ramp: Ramp, tasks: list[Any], timeout_s: float, figures: dict[str, Any]) -> tuple[float, int]:
    """Run the ramp (a task of `tasks` for each of its sends), print and record its steps; the steady phase's rate (the capacity
    found) and its tasks."""
    print(
        f"ramp: {', '.join(f'{r:g}' for r in ramp.rates)} tasks/s, {ramp.step_s:g} s each; a step holds when the actions "
        f"proposed in it were executed with p99 ≤ {ramp.p99_ms:g} ms"
    )
    climbed = await submit(kit, tasks, 0.0, timeout_s, ramp_offsets(ramp.rates, ramp.step_s))
    steps = by_step(climbed["proposed"], climbed["results"], climbed["start_ms"], ramp.rates, ramp.step_s, ramp.p99_ms)
    for k, step in enumerate(steps):
        print(
            f"  {step.rate:5g} tasks/s: {step.actions_per_s:6.1f} actions/s proposed, {step.executed}/{step.actions} executed, "
            f"p50 {step.p50_ms:.0f} ms, p99 {step.p99_ms:.0f} ms  {'held' if step.held else 'NOT HELD'}"
        )
        figures |= {f"ramp_{k}_rate": step.rate, f"ramp_{k}_actions_per_s": step.actions_per_s, f"ramp_{k}_p99_ms": step.p99_ms}
        figures[f"ramp_{k}_held"] = 1.0 if step.held else 0.0
    figures |= {"ramp_steps": len(steps), "ramp_step_s": ramp.step_s, "ramp_p99_limit_ms": ramp.p99_ms, "hold_s": ramp.hold_s}
    held = capacity(steps)
    if (closed := len(climbed["outcomes"])) < len(tasks):  # results never seen would be left out of a step's p99
        print(f"  the ramp closed {closed} of its {len(tasks)} tasks in {timeout_s:.0f}s: no step is claimed as held")
        held = None
    if held is None:
        print(f"  no step held: the steady phase runs at the first step's {ramp.rates[0]:g} tasks/s")
        rate = ramp.rates[0]
    else:
        figures |= {"capacity_tasks_per_s": held.rate, "capacity_actions_per_s": held.actions_per_s}
        print(f"  capacity: {held.rate:g} tasks/s ({held.actions_per_s:.1f} actions/s); now {ramp.hold_s:g} s at that rate")
        rate = held.rate
    n_tasks = round(rate * ramp.hold_s)
    figures |= {"tasks": n_tasks, "rate_tasks_per_s": rate}
    return rate, n_tasks


async def main(
    n_tasks: int,
    timeout_s: float,
    admin_url: str,
    rate: float,
    light: int,
    light_rate: float,
    idle_s: float,
    profile_to: Path | None,
    profile_all: Path | None = None,
    ramp: Ramp | None = None,
    latencies_to: Path | None = None,
    broker_to: Path | None = None,
) -> None:
    base = KitSettings()
    run_id = uuid.uuid4().hex[:8]
    dbname = f"tidegate_bench_{run_id}"
    tmp = Path(tempfile.mkdtemp(prefix="tidegate-bench-"))
    db_url = with_database(base.database_url, dbname)
    (tmp / "keys").mkdir()  # a service refuses a keys folder that is not there (a mistyped TIDEGATE_KEYS_DIR)
    kit = KitSettings(database_url=db_url, topic_prefix=f"bench-{run_id}.", keys_dir=tmp / "keys", run_dir=tmp / "run")
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f"CREATE DATABASE {dbname} OWNER tidegate")
    await admin.close()
    env = os.environ | {
        "TIDEGATE_DATABASE_URL": kit.database_url,
        "TIDEGATE_TOPIC_PREFIX": kit.topic_prefix,
        "TIDEGATE_KEYS_DIR": str(kit.keys_dir),
        "TIDEGATE_RUN_DIR": str(kit.run_dir),
        "TIDEGATE_APPROVAL_HTTP_PORT": "0",
        "TIDEGATE_LOG_LEVEL": "WARNING",
    }
    cli = [sys.executable, "-m", "tidegate.cli"]
    if ramp is not None:  # the steady phase's rate and length are known only once the ramp has run: a ticket for the most
        n_tasks = round(max(ramp.rates) * ramp.hold_s)
    figures: dict[str, Any] = {"tasks": n_tasks, "rate_tasks_per_s": rate}
    try:
        await ensure_topics(
            kit.kafka_bootstrap, kit.topic_prefix, catalog_topic_names(["update_inventory"]), partitions=kit.topic_partitions
        )
        await migrate(kit)  # as the operator would: services log in as their own roles and never migrate
        pool = await asyncpg.create_pool(kit.operator_database_url, min_size=1, max_size=2)
        await seed_demo(pool, ("acme",))
        n_ramp = len(ramp_offsets(ramp.rates, ramp.step_s)) if ramp is not None else 0
        tickets = [bench_ticket(i) for i in range(n_tasks + light + n_ramp)]  # one of its own for each task
        async with pool.acquire() as conn:
            await insert_tickets(conn, "acme", tickets)
        await pool.close()
        t = time.monotonic()
        up = await asyncio.to_thread(subprocess.run, [*cli, "up", "--detach", "--wait", "180"], env=env, capture_output=True)
        if up.returncode != 0:
            raise RuntimeError(f"`tidegate up` failed ({up.returncode}): {up.stderr.decode(errors='replace')[-3000:]}")
        print(f"services up in {time.monotonic() - t:.1f}s (prefix {kit.topic_prefix}, database {dbname})")
        pids = service_pids(int((kit.run_dir / "up.pid").read_text().split()[0]))  # the supervisor's pid, then when it started

        make = lambda i: ticket_task(tickets[i], task_id=f"bench-{run_id}-{i}")  # noqa: E731
        hottest = "policy"
        if idle_s > 0:  # no load at all: what the services spend waiting (polls, timers, sweeps), per second
            before, t_idle = cpu_now(pids), time.monotonic()
            await asyncio.sleep(idle_s)
            after, span_s = cpu_now(pids), time.monotonic() - t_idle
            for name in SERVICES:
                if name in before and name in after:
                    figures[f"idle_cpu_ms_per_s_{name}"] = 1000 * (after[name][0] - before[name][0]) / span_s
            figures["idle_cpu_ms_per_s"] = sum(figures.get(f"idle_cpu_ms_per_s_{name}", 0.0) for name in SERVICES)
            print(
                f"idle ({idle_s:g}s, no load): {figures['idle_cpu_ms_per_s']:.1f} ms of CPU per second, five services ("
                + ", ".join(f"{name} {figures.get(f'idle_cpu_ms_per_s_{name}', float('nan')):.1f}" for name in SERVICES)
                + ")"
            )
        if light:
            before = cpu_now(pids)
            quiet = await submit(kit, [make(n_tasks + i) for i in range(light)], light_rate, timeout_s)
            after = cpu_now(pids)
            hottest = max(after, key=lambda name: after[name][0] - before.get(name, (0.0, 0, 0))[0])
            figures |= {"light_p50_ms": pct(quiet["lat"], 0.5), "light_p99_ms": pct(quiet["lat"], 0.99), "light_n": len(quiet["lat"])}
            figures["light_rate_tasks_per_s"] = light_rate
            print(
                f"light load ({light} tasks at {light_rate:g} tasks/s): proposal → result p50 {figures['light_p50_ms']:.0f} ms, "
                f"p99 {figures['light_p99_ms']:.0f} ms (n={len(quiet['lat'])})"
            )

        if ramp is not None:
            rate, n_tasks = await find_capacity(kit, ramp, [make(n_tasks + light + i) for i in range(n_ramp)], timeout_s, figures)

        infra = infra_pids(kit)
        roles = await backend_roles(admin_url) if "postgres" in infra else {}
        statements_before = await db_profile.read(admin_url, dbname) if "postgres" in infra else None  # before the CPU readings
        before, counted, (infra_before, db_before) = cpu_now(pids), counts_now(pids), infra_cpu(infra, roles)
        expected_s = n_tasks / rate if rate > 0 else 30.0
        samplers = []
        if profile_to is not None and hottest in pids:
            samplers.append(await profile.record(pids[hottest], profile_to, max(5, int(expected_s))))
            figures["profiled_service"] = hottest
        if profile_all is not None:  # every service, one file each (`<dir>/<service>.txt`)
            profile_all.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240  (once, before the phase)
            for name, pid in pids.items():
                samplers.append(await profile.record(pid, profile_all / f"{name}.txt", max(5, int(expected_s))))
        broker = infra.get("kafka", [None])[0] if broker_to is not None else None
        recording = await broker_profile.record(broker, broker_to, max(5, int(expected_s))) if broker and broker_to else None
        seen = await submit(kit, [make(i) for i in range(n_tasks)], rate, timeout_s)
        roles = await backend_roles(admin_url) if "postgres" in infra else {}
        after, counted_after, (infra_after, db_after) = cpu_now(pids), counts_now(pids), infra_cpu(infra, roles)
        statements_after = await db_profile.read(admin_url, dbname) if statements_before is not None else None
        for sampler in samplers:
            await profile.stop(sampler)
        if broker and broker_to:
            await broker_profile.stop(broker, recording)
            if (broker_parts := await asyncio.to_thread(broker_profile.read, broker_to)) is not None:
                figures["broker_profile"] = broker_parts
        outcomes, elapsed, wall, lat = seen["outcomes"], seen["elapsed"], seen["wall"], seen["lat"]
        if latencies_to is not None:  # one line per executed action: when it was proposed, how long to its result
            write_latencies(latencies_to, seen["proposed"], seen["results"])
        n_actions = len(seen["proposed"])
        print(
            f"\ntasks: {len(outcomes)}/{n_tasks} closed in {elapsed:.1f}s (submitting took {seen['submit_s']:.1f}s)"
            + ("" if len(outcomes) == n_tasks else f"  — TIMED OUT after {timeout_s:.0f}s")
        )
        print(
            f"throughput: {len(outcomes) / elapsed:.1f} tasks/s, {n_actions / elapsed:.1f} actions/s ({n_actions} actions proposed, "
            f"{len(seen['results'])} executed)"
        )
        print(
            f"proposal → result: p50 {pct(lat, 0.5):.0f} ms, p99 {pct(lat, 0.99):.0f} ms, max {max(lat, default=0):.0f} ms "
            f"(n={len(lat)}; broker timestamps)"
        )
        minutes = by_minute(seen["proposed"], seen["results"])
        whole = [p99 for _, _, p99, complete in minutes if complete]
        if whole:  # a sustained run: does the latency hold, minute after minute?
            shown = "; ".join(f"{p50:.0f} / {p99:.0f} ms" + ("" if complete else " (the tail)") for _, p50, p99, complete in minutes)
            print(f"  by the minute its proposal was made (p50 / p99): {shown}")
            figures["worst_minute_p99_ms"] = max(whole)
        statuses = Counter(f"{o.data.status}{'/' + o.data.reason if o.data.reason else ''}" for o in outcomes)
        print(f"outcomes: {dict(statuses)}")
        print("\nper service (CPU over the run as % of one core; RSS now / peak):")
        cpu_total = 0.0
        for name in SERVICES:
            if name in before and name in after:
                cpu = after[name][0] - before[name][0]
                cpu_total += cpu
                rss, peak = after[name][1] / 2**20, after[name][2] / 2**20
                figures[f"rss_mib_{name}"], figures[f"peak_rss_mib_{name}"], figures[f"cpu_s_{name}"] = rss, peak, cpu
                print(f"  {name:9s} cpu {cpu:7.1f}s = {100 * cpu / wall:5.1f}%   rss {rss:6.0f} MiB / peak {peak:6.0f} MiB")
        if n_actions:
            print("\nper service and governed action (from /proc): CPU in user mode / in the kernel, wake-ups")
            for name in SERVICES:
                if name in counted and name in counted_after:
                    d = {k: (counted_after[name][k] - counted[name][k]) / n_actions for k in counted[name]}
                    figures |= {f"per_action_{k}_{name}": v for k, v in d.items()}
                    print(f"  {name:9s} {1000 * d['user_s']:5.2f} / {1000 * d['sys_s']:5.2f} ms   {d['wakeups']:5.1f} wake-ups")
        figures |= {
            "tasks_closed": len(outcomes),
            "tasks_per_s": len(outcomes) / elapsed,
            "actions": n_actions,
            "actions_per_s": n_actions / elapsed,
            "p50_ms": pct(lat, 0.5),
            "p99_ms": pct(lat, 0.99),
            "cpu_ms_per_action": 1000 * cpu_total / n_actions if n_actions else float("nan"),
        }
        idle_ms = figures.get("idle_cpu_ms_per_s")
        if n_actions and idle_ms is not None:  # what the actions cost beyond what the services spend idle over the same time
            figures["cpu_ms_per_action_net"] = (1000 * cpu_total - idle_ms * wall) / n_actions
        print(
            f"five services: {figures['cpu_ms_per_action']:.1f} ms of CPU per governed action at {rate:g} tasks/s"
            + (f" ({figures['cpu_ms_per_action_net']:.1f} ms beyond their idle CPU)" if "cpu_ms_per_action_net" in figures else "")
        )
        if n_actions and infra_before:
            # The broker and the database run on the same cores: what they spend per action bounds the rate as the services do.
            infra_ms = {name: 1000 * (infra_after[name] - infra_before[name]) / n_actions for name in infra_before}
            figures |= {f"infra_cpu_ms_per_action_{name}": ms for name, ms in infra_ms.items()}
            machine_ms = figures["cpu_ms_per_action"] + sum(infra_ms.values())
            figures["machine_cpu_ms_per_action"] = machine_ms
            figures["machine_ceiling_actions_per_s"] = 1000 * (os.cpu_count() or 1) / machine_ms
            print(
                "with the infrastructure (from /proc): "
                + ", ".join(f"{name} {ms:.1f} ms" for name, ms in infra_ms.items())
                + f" per governed action; the whole machine {machine_ms:.1f} ms, so at most "
                f"{figures['machine_ceiling_actions_per_s']:.0f} actions/s on its {os.cpu_count()} cores"
            )
            # PostgreSQL's share by the role each backend serves (backends alive over the whole phase: pools keep theirs)
            served = {role: 1000 * seconds / n_actions for role, seconds in by_role(db_before, db_after).items()}
            figures |= {f"db_cpu_ms_per_action_{role}": ms for role, ms in served.items()}
            if served:
                print("  PostgreSQL by the role served: " + ", ".join(f"{role} {ms:.2f} ms" for role, ms in served.items()))
        if n_actions and statements_before is not None and statements_after is not None:
            if statements := db_profile.summarise(statements_before, statements_after, n_actions):
                figures["db_statements"] = statements
                print(
                    f"  PostgreSQL's statements (pg_stat_statements, by the wall clock): {statements['calls']:.1f} an action, "
                    f"{statements['exec_ms']:.2f} ms executing and {statements['plan_ms']:.2f} ms planning an action; the most:"
                )
                for row in statements["statements"]:
                    print(
                        f"    {row['exec_ms'] + row['plan_ms']:5.2f} ms  {row['calls']:4.2f} calls ({row['planned']:4.0%} planned)  "
                        f"{row['service']}: {row['what']}"
                    )
        elif n_actions and "postgres" in infra:
            print("  PostgreSQL's statements: not counted (the cluster does not load pg_stat_statements; `tidegate infra down && up`)")
        if "broker_profile" in figures:
            shares = figures["broker_profile"]
            print(f"  the broker's CPU by what it went to (Java Flight Recorder, {shares['samples']:,} samples):")
            for label, share in shares["parts"]:
                print(f"    {share:5.1f} %  {label}")
        print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end (shared)")
        if outcomes:
            keys = ("model", "retrieval", "tools", "orchestration", "retries", "human_review", "total")
            sums = {k: sum(getattr(o.data.cost, k) for o in outcomes) for k in keys}
            counts: Counter[str] = Counter()
            for o in outcomes:
                counts.update({k: v for k, v in o.data.counts.model_dump().items() if v})
            print(f"\ncost report ({len(outcomes)} tasks): total ${sums['total']:.4f}, per task ${sums['total'] / len(outcomes):.6f}")
            print("  " + ", ".join(f"{k} ${sums[k]:.4f}" for k in keys[:-1]))
            print(f"  actions by outcome: {dict(counts)}")
            print(
                f"  mean task duration {statistics.mean(o.data.duration_ms for o in outcomes):.0f} ms; human touches "
                f"{sum(o.data.human_touches for o in outcomes)}"
            )
    finally:
        await asyncio.to_thread(subprocess.run, [*cli, "down"], env=env, capture_output=True, check=False, timeout=120)
        await drop_bench_prefix(kit)
        with contextlib.suppress(Exception):
            admin = await asyncpg.connect(admin_url)
            await admin.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
            await admin.close()
    emit_figures("e2e", figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="5 minutes open loop at 118 tasks/s (~500 actions/s, issue #12's target).")
    parser.add_argument("--tasks", type=int, default=None, help="Tasks of the steady phase (default 300; --full 35,400).")
    parser.add_argument(
        "--rate", type=float, default=None, help="Submit at this many tasks/s, open loop (default 5; --full 118; 0: a burst)."
    )
    parser.add_argument("--light", type=int, default=20, help="Tasks of the light-load phase before it (0: skip).")
    parser.add_argument("--light-rate", type=float, default=2.0, help="Tasks/s of the light-load phase.")
    parser.add_argument("--idle", type=float, default=10.0, help="Seconds of no load first, to measure the services' idle CPU (0: skip).")
    parser.add_argument("--timeout", type=float, default=900.0, help="Seconds to wait for every outcome of a phase.")
    parser.add_argument(
        "--profile", type=Path, default=None, help="Sample the hottest service with py-spy during the steady phase, into this file."
    )
    parser.add_argument(
        "--profile-all", type=Path, default=None, help="Sample every service with py-spy during the steady phase, into <dir>/<service>.txt."
    )
    parser.add_argument(
        "--latencies", type=Path, default=None, help="Write the steady phase's actions (proposed at, latency) to this CSV file."
    )
    parser.add_argument(
        "--profile-broker",
        type=Path,
        default=None,
        help="Record the Kafka broker with Java Flight Recorder during the steady phase, into this .jfr file, and print what its CPU "
        "went to (needs the JDK's jcmd and jfr).",
    )
    parser.add_argument(
        "--ramp",
        default=None,
        help="Find the rate first: step through these tasks/s (comma-separated, rising), each for --step-s; the steady phase then "
        "holds the highest one whose steps all kept p99 within --p99-ms, for --hold-s (--rate and --tasks do not apply).",
    )
    parser.add_argument("--step-s", type=float, default=60.0, help="Seconds of each --ramp step.")
    parser.add_argument("--p99-ms", type=float, default=250.0, help="The p99 (proposal → result) a --ramp step must keep (issue #12's).")
    parser.add_argument(
        "--hold-s", type=float, default=300.0, help="Seconds of the steady phase after a --ramp (issue #12's five minutes)."
    )
    parser.add_argument(
        "--admin-url",
        default=None,
        help="PostgreSQL superuser DSN, to create and drop the benchmark's database (default: the local cluster's superuser, by socket).",
    )
    args = parser.parse_args()
    ramp = None
    if args.ramp is not None:
        if args.rate is not None or args.tasks is not None:  # --full adds nothing: the hold is already issue #12's 5 minutes
            parser.error("--ramp finds the steady phase's rate and length: leave out --rate and --tasks")
        try:
            rates = tuple(float(r) for r in args.ramp.split(","))
        except ValueError:
            parser.error(f"--ramp takes rates in tasks/s separated by commas, such as 10,14,18 (got {args.ramp!r})")
        if not rates or any(r <= 0 for r in rates) or list(rates) != sorted(rates):
            parser.error(f"--ramp's rates must be above 0 and rising (got {args.ramp!r})")
        if args.step_s <= 0 or args.hold_s <= 0:
            parser.error("--step-s and --hold-s must be above 0")
        ramp = Ramp(rates, args.step_s, args.p99_ms, args.hold_s)
    tasks = args.tasks if args.tasks is not None else (35_400 if args.full else 300)
    rate = args.rate if args.rate is not None else (118.0 if args.full else 5.0)
    admin_url = args.admin_url or local_superuser_url(KitSettings())
    phases = (tasks, args.timeout, admin_url, rate, args.light, args.light_rate, args.idle)
    asyncio.run(main(*phases, args.profile, args.profile_all, ramp, args.latencies, args.profile_broker))
