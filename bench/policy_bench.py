"""Policy benchmark: decisions per second and p50/p99 latency, in process and through Kafka, with 1, 10 and 100 policies.

Prints figures; never asserts. Run with the infrastructure up:

    .venv/bin/python -m bench.policy_bench             # short: in process, then 1 policy through Kafka, one process
    .venv/bin/python -m bench.policy_bench --full      # 1, 10 and 100 policies, one and two processes (~4 min)
    .venv/bin/python -m bench.policy_bench --no-kafka  # in process only

In process: `engine.decide` alone (Cedar evaluation with facts and guards), then the service's whole
use case with the in-memory repository (decide + sign + encode). Through Kafka: the real service
as `python -m services.policy` processes (PostgreSQL repository, a database of its own) on a fresh topic prefix; latency is measured one
proposal at a time (published → its `action.decided` consumed), throughput with a burst (encoded
before the clock starts), by one process and by several in one consumer group. The proposals are
the planner's (signed with its key), so, as in production, their tasks are published on `tasks`
first and learned before the clock starts: a planner's proposal is decided once its task is learned. The in-process runs
tune the garbage collector as a running service does (`servicekit.runner.tune_gc`).

The packs of 10 and 100 policies hold per-tenant thresholds, which the engine slices away for the
benchmark's tenant (`CompiledPack.policy_set_for`); "all evaluated" is a pack of 100 policies that
apply to every request, the worst case.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.bare_hop import cpu_seconds
from bench.clients import drop_bench_prefix, emit_figures, kafka_options
from schemas import ActionProposed, ActionProposedData, Envelope, TaskSubmitted, TaskSubmittedData, encode, headers_for
from servicekit import REPO_ROOT, KitSettings, Recorded, ToolCatalog, catalog_topic_names, ensure_topics, sign_as_producer
from servicekit.dbroles import with_database
from servicekit.runner import tune_gc
from services.policy import Call, Controls, History, PackSource, compile_pack, decide
from services.policy import in_process as policy_in_process
from tidegate.database import local_superuser_url, migrate

CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
ARGS = {"payee_id": "cus_1001", "amount_usd": 40.0, "order_id": "O-1"}


def pack_with(n: int, *, per_tenant: bool = True) -> PackSource:
    """A pack of `n` policies: one permit that fires for the benchmark's refund, and n-1 that do not fire.

    `per_tenant`: the n-1 are per-tenant thresholds (`context.tenant == "tenant-i" && ...`), the usual
    reason a pack grows, and the engine slices them away for the benchmark's tenant. Otherwise they
    apply to every tenant, so each request evaluates all n (the worst case).
    """
    policies = [
        '@id("refund-allow") @outcome("allow") @reason("within_threshold")\npermit (principal, action in Action::"financial", resource)\n'
        "when { context.facts.amount_cents < context.settings.refund_threshold_cents };"
    ]
    for i in range(1, n):
        condition = (
            f'context.tenant == "tenant-{i}" && context.facts.amount_cents >= {i * 100}'
            if per_tenant
            else f"context.facts.amount_cents >= {1_000_000 + i}"
        )
        policies.append(
            f'@id("threshold-{i}") @outcome("escalate") @reason("needs_human_approval")\n'
            f'permit (principal, action in Action::"financial", resource)\n'
            f"when {{ {condition} }} unless {{ context.approval.granted }};"
        )
    settings = PackSource.from_dir(REPO_ROOT / "policies" / "default").settings
    return PackSource(files={"bench.cedar": "\n\n".join(policies)}, settings=settings)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def line(label: str, samples_ms: list[float], per_s: float) -> None:
    p50, p99 = statistics.median(samples_ms), pct(samples_ms, 0.99)
    print(f"  {label:<40} {per_s:>7.0f}/s   p50 {p50:7.3f} ms   p99 {p99:7.3f} ms   (n={len(samples_ms)})")


def proposal(i: int, run: str) -> ActionProposed:
    data = ActionProposedData(
        action_id=f"bench-{run}-{i}",
        task_id=f"bench-{run}-{i % 1000}",  # many tasks, as in production: keys spread over the partitions
        tenant_id="acme",
        step=i,
        tool="issue_refund",
        args=ARGS,
        proposer="bench",
        mode="autonomous",
    )
    return ActionProposed.build(data, source="bench")


def in_process(n_policies: int, count: int, *, per_tenant: bool = True) -> None:
    source = pack_with(n_policies, per_tenant=per_tenant) if n_policies else PackSource.from_dir(REPO_ROOT / "policies" / "default")
    pack = compile_pack(source, CATALOG)
    call = Call("acme", "t-1", "issue_refund", ARGS, "bench", mode="autonomous")
    for _ in range(200):  # warm up
        decide(pack, call, History(), Controls())
    samples = []
    start = time.perf_counter()
    for _ in range(count):
        t0 = time.perf_counter()
        verdict = decide(pack, call, History(), Controls())
        samples.append((time.perf_counter() - t0) * 1000)
    total = time.perf_counter() - start
    assert verdict.outcome == "allow"  # a sanity check of the set-up, not of speed
    label = f"{len(pack.rules)} policies" + (" (default pack)" if not n_policies else "" if per_tenant else ", all evaluated")
    line(f"engine.decide, {label}", samples, count / total)
    # The pack remembers Cedar's answer per request (`CompiledPack.remembered`): above, one request over and over. Each
    # request new (another amount each time) is what a decision costs when Cedar evaluates it.
    amounts = [round(10 + i / 100, 2) for i in range(count)]
    fresh = [Call("acme", "t-1", "issue_refund", ARGS | {"amount_usd": a}, "bench", mode="autonomous") for a in amounts]
    samples = []
    start = time.perf_counter()
    for call in fresh:
        t0 = time.perf_counter()
        decide(pack, call, History(), Controls())
        samples.append((time.perf_counter() - t0) * 1000)
    line(f"engine.decide, {label}, each request new", samples, count / (time.perf_counter() - start))


async def service_in_process(n_policies: int, count: int, *, per_tenant: bool = True) -> None:
    source = pack_with(n_policies, per_tenant=per_tenant)
    with tempfile.TemporaryDirectory() as keys:

        async def publish_many(events: list[Recorded]) -> None:
            pass  # the wire is measured through Kafka below

        service = policy_in_process(compile_pack(source, CATALOG), CATALOG, keys_dir=Path(keys), publish_many=publish_many)
        run = uuid.uuid4().hex[:6]
        events = [proposal(i, run) for i in range(count)]
        samples = []
        start = time.perf_counter()
        for e in events:
            t0 = time.perf_counter()
            await service.on_proposed(e)
            samples.append((time.perf_counter() - t0) * 1000)
        total = time.perf_counter() - start
    line(
        f"service use case, {n_policies} policies" + ("" if per_tenant else ", all evaluated"), samples, count / total
    )  # decide + sign + events + in-memory record


async def start_copies(kit: KitSettings, copies: int, run_dir: Path) -> list[subprocess.Popen[bytes]]:
    """Start `copies` policy service processes (`python -m services.policy`) and wait until each is ready."""
    env = os.environ | {
        "TIDEGATE_TOPIC_PREFIX": kit.topic_prefix,
        "TIDEGATE_DATABASE_URL": kit.database_url,
        "TIDEGATE_KEYS_DIR": str(kit.keys_dir),
        "TIDEGATE_POLICY_DIR": str(kit.policy_dir),
        "TIDEGATE_LOG_LEVEL": "WARNING",
    }
    procs = []
    for i in range(copies):
        ready = run_dir / f"ready-{i}"
        log = (run_dir / f"policy-{i}.log").open("wb")
        procs.append(
            subprocess.Popen(  # noqa: ASYNC220  (a benchmark; the start of a child process is not what is measured)
                [sys.executable, "-m", "services.policy"],
                env=env | {"TIDEGATE_READY_DIR": str(ready)},
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        deadline = time.monotonic() + 60
        while not (ready / "policy.ready").exists():
            if procs[-1].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"policy copy {i} did not start: " + (run_dir / f"policy-{i}.log").read_text()[-3000:])
            await asyncio.sleep(0.1)
    return procs


def show_failures(run_dir: Path) -> None:
    for log in run_dir.glob("*.log"):
        if "Traceback" in log.read_text():
            print(log.read_text()[-3000:])


def stop_copies(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


async def through_kafka(
    n_policies: int, sequential: int, burst: int, admin_url: str, base_url: str, copies: int = 1, *, per_tenant: bool = True
) -> dict[str, float]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    dbname = f"tidegate_bench_{uuid.uuid4().hex[:8]}"
    kit0 = KitSettings()
    await ensure_topics(kit0.kafka_bootstrap, prefix, catalog_topic_names())
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f"CREATE DATABASE {dbname} OWNER tidegate")
    with tempfile.TemporaryDirectory() as tmp:
        pack_dir = Path(tmp) / "pack"
        pack_dir.mkdir()
        source = pack_with(n_policies, per_tenant=per_tenant)
        for name, text in source.files.items():
            (pack_dir / name).write_text(text)
        import yaml

        (pack_dir / "settings.yaml").write_text(yaml.safe_dump(source.settings))
        (Path(tmp) / "keys").mkdir(exist_ok=True)  # a service refuses a keys folder that is not there
        kit = KitSettings(
            topic_prefix=prefix, database_url=with_database(base_url, dbname), keys_dir=Path(tmp) / "keys", policy_dir=pack_dir
        )
        await migrate(kit)  # as the operator would: services log in as their own roles and never migrate
        procs = await start_copies(kit, copies, Path(tmp))
        producer = AIOKafkaProducer(acks="all", linger_ms=2, **kafka_options(kit))
        consumer = AIOKafkaConsumer(
            prefix + "actions.decided",
            auto_offset_reset="earliest",
            group_id=f"bench-{uuid.uuid4().hex[:6]}",
            enable_auto_commit=False,
            **kafka_options(kit),
        )
        await producer.start()
        await consumer.start()
        seen: dict[str, float] = {}
        arrived = asyncio.Event()

        async def collect() -> None:
            async for record in consumer:
                seen[json.loads(record.value)["data"]["action_id"]] = time.perf_counter()  # cheap: the benchmark shares the cores
                arrived.set()

        collector = asyncio.create_task(collect())

        async def send(event: Envelope, topic: str = "actions.proposed") -> Any:
            event = sign_as_producer(kit, event)  # signed as its producer would (the service verifies every event)
            headers = [(k, v.encode()) for k, v in headers_for(event).items()]
            return await producer.send(prefix + topic, encode(event), key=event.key, headers=headers)

        async def learn_tasks(suffix: str, count: int) -> None:
            """Publish the tasks of `count` proposals of `suffix` (as a client signs them) and wait until the service learned them."""
            ids = sorted({proposal(i, run + suffix).data.task_id for i in range(count)})
            for task_id in ids:
                data = TaskSubmittedData(
                    task_id=task_id, tenant_id="acme", workflow="support_triage", input={}, requested_by="bench", mode="autonomous"
                )  # as the proposals ask: a task's mode bounds its proposals
                await send(TaskSubmitted.build(data, source="bench"), "tasks")
            await producer.flush()
            db = await asyncpg.connect(with_database(admin_url, dbname))
            try:
                deadline = time.perf_counter() + 120
                learned = "SELECT count(*) FROM policy.tasks_learned WHERE task_id LIKE $1"
                while await db.fetchval(learned, f"bench-{run}{suffix}-%") < len(ids):
                    if time.perf_counter() > deadline:
                        raise TimeoutError(f"the policy service learned too few of {len(ids)} tasks")
                    await asyncio.sleep(0.1)
            finally:
                await db.close()

        run = uuid.uuid4().hex[:6]
        try:
            await learn_tasks("w", 20)
            await learn_tasks("s", sequential)
            await learn_tasks("b", burst)
            for i in range(20):  # warm up: consumer group joined, connections open
                await (await send(proposal(i, run + "w")))
            while len(seen) < 20:
                arrived.clear()
                await asyncio.wait_for(arrived.wait(), 30)
            latencies = []
            for i in range(sequential):
                e = proposal(i, run + "s")
                t0 = time.perf_counter()
                await send(e)
                while e.data.action_id not in seen:
                    arrived.clear()
                    await asyncio.wait_for(arrived.wait(), 30)
                latencies.append((seen[e.data.action_id] - t0) * 1000)
            # Encoded before the clock starts: what is timed is the service, not the benchmark's own serialization.
            wire = [(e.data.action_id, encode(e), e.key, [(k, v.encode()) for k, v in headers_for(e).items()]) for e in
                    (sign_as_producer(kit, proposal(i, run + "b")) for i in range(burst))]  # fmt: skip
            sent: dict[str, float] = {}
            cpu_start = sum(cpu_seconds(p.pid) for p in procs)
            t_start = time.perf_counter()
            futures = []
            for action_id, value, key, headers in wire:
                sent[action_id] = time.perf_counter()
                futures.append(await producer.send(prefix + "actions.proposed", value, key=key, headers=headers))
            await asyncio.gather(*futures)
            ids = set(sent)
            deadline = time.perf_counter() + 120
            while not ids <= seen.keys() and time.perf_counter() < deadline:
                arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), 5)
            done = [a for a in ids if a in seen]
            elapsed = max(seen[a] for a in done) - t_start
            cpu_ms = (sum(cpu_seconds(p.pid) for p in procs) - cpu_start) * 1000 / max(len(done), 1)
            label = f"{n_policies:>3} policies{'' if per_tenant else ' (all evaluated)'}, {copies} cop{'y' if copies == 1 else 'ies'}"
            p50, p99 = statistics.median(latencies), pct(latencies, 0.99)
            print(f"  Kafka, {label}, one at a time:  p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   (n={len(latencies)})")
            burst_lat = [(seen[a] - sent[a]) * 1000 for a in done]
            print(
                f"  Kafka, {label}, burst of {burst}: {len(done) / elapsed:8.0f} decisions/s   "
                f"p50 {statistics.median(burst_lat):7.1f} ms   p99 {pct(burst_lat, 0.99):7.1f} ms (queueing included)"
                + ("" if len(done) == burst else f"   [{burst - len(done)} missing]")
            )
            print(f"  Kafka, {label}, burst of {burst}: {cpu_ms:.3f} ms of the policy processes' CPU per decision (/proc)")
            figures = {"seq_p50_ms": p50, "seq_p99_ms": p99, "burst_per_s": len(done) / elapsed, "burst_n": burst}
            return figures | {"burst_cpu_ms_per_decision": cpu_ms}
        finally:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector
            await consumer.stop()
            await producer.stop()
            stop_copies(procs)
            show_failures(Path(tmp))
            await admin.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
            await admin.close()
            await drop_bench_prefix(kit0, prefix)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="Every pack (1, 10, 100 policies) through Kafka, and with --copies processes.")
    parser.add_argument("--no-kafka", action="store_true", help="Skip the runs through Kafka.")
    parser.add_argument("--count", type=int, default=None, help="Decisions per in-process run (default 1,000; --full 4,000).")
    parser.add_argument("--sequential", type=int, default=100, help="Proposals sent one at a time through Kafka (latency).")
    parser.add_argument("--burst", type=int, default=None, help="Proposals sent at once through Kafka (default 4,000; --full 8,000).")
    parser.add_argument(
        "--copies", type=int, default=2, help="With --full, also run each pack with this many service processes in one group (1: skip)."
    )
    opts = parser.parse_args()
    count = opts.count or (4000 if opts.full else 1000)
    burst = opts.burst or (8000 if opts.full else 4000)
    tune_gc()  # as `ServiceProcess.run_until_signalled` does once a service has started
    print("In process (one core of this machine):")
    for n in (1, 10, 100) if opts.full else (1,):
        in_process(n, count)
    if opts.full:
        in_process(100, count, per_tenant=False)
    in_process(0, count)
    for n in (1, 10, 100) if opts.full else (1,):
        await service_in_process(n, count // 2)
    if opts.full:
        await service_in_process(100, count // 2, per_tenant=False)
    if opts.no_kafka:
        return
    kit = KitSettings()
    base = kit.database_url
    admin = local_superuser_url(kit)
    print("Through Kafka (proposal published → decision consumed; real service, PostgreSQL):")
    figures = await through_kafka(1, opts.sequential, burst, admin, base)
    if opts.full:
        if opts.copies > 1:
            await through_kafka(1, opts.sequential, burst, admin, base, copies=opts.copies)
        for n, per_tenant in ((10, True), (100, True), (100, False)):
            await through_kafka(n, opts.sequential, burst, admin, base, per_tenant=per_tenant)
            if opts.copies > 1:
                await through_kafka(n, opts.sequential, burst, admin, base, copies=opts.copies, per_tenant=per_tenant)
    emit_figures("policy", figures)


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main())
