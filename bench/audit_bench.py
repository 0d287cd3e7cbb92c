"""Audit benchmark: ingestion rate (Kafka → hash chain → PostgreSQL), verify speed, explain latency.

Prints figures only. Runs against the local infrastructure (`tidegate infra up`) in a database and
topic prefix of its own, dropped at the end. About a minute.

    .venv/bin/python -m bench.audit_bench            # short: 15,000 events
    .venv/bin/python -m bench.audit_bench --full     # 60,000 events
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

import schemas as s
from bench.clients import drop_bench_prefix, emit_figures, kafka_options
from servicekit import (
    Authority,
    Keyring,
    KitSettings,
    SigningKey,
    catalog_topic_names,
    deployment_authority,
    ensure_topics,
    sign_as_producer,
)
from servicekit.dbroles import with_database
from servicekit.runner import tune_gc
from services.audit import (
    AuditSettings,
    Checkpointer,
    PostgresAuditLog,
    build,
    explain_task,
    observe,
    verify_log,
)
from tidegate.audit_render import render_markdown
from tidegate.database import local_superuser_url, migrate


def proposal(i: int, task: str) -> s.ActionProposed:
    return s.ActionProposed.build(
        s.ActionProposedData(
            action_id=f"{task}-a{i}",
            task_id=task,
            tenant_id="acme",
            step=i % 20,
            tool="issue_refund",
            args={"payee_id": f"cus_{i % 97}", "amount_usd": 40.0 + i % 500, "order_id": f"O-{i}"},
            rationale="customer asked for a refund of a duplicate charge",
            proposer="tidegate/planner/playbook",
            cost=s.ProposalCost(model="gpt-4o-mini", tokens_in=812, tokens_out=64, usd=0.00042),
        ),
        source="tidegate/planner",
        traceparent=f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
    )


def task_of_50(task: str) -> list[tuple[str, s.Envelope]]:
    """A task with 50 events: submitted, 12 x (proposed, decided, authorized, succeeded), completed."""
    now = s.utcnow()
    events: list[tuple[str, s.Envelope]] = [
        (
            "tasks",
            s.TaskSubmitted.build(
                s.TaskSubmittedData(
                    task_id=task,
                    tenant_id="acme",
                    workflow="support_triage",
                    input={"ticket_id": "T-1", "body": "refund please"},
                    untrusted=["body"],
                    requested_by="alice@acme.example",
                ),
                source="cli",
            ),
        ),
    ]
    args = {"ticket_id": "T-1", "tags": ["x"]}
    auth = s.Authorization(
        via="policy", policy_version="sha256:abc", action_digest="d" * 64, issued_at=now, expires_at=now, key_id="policy-1", signature="sig"
    )
    allowed = [s.Reason(code=s.ReasonCode.LOW_RISK_WRITE_ALLOWED, policy_id="low-risk")]
    for step in range(12):
        base = {"action_id": f"{task}-step{step}", "task_id": task, "tenant_id": "acme", "tool": "tag_ticket", "step": step, "args": args}
        proposed = s.ActionProposedData(**base, proposer="tidegate/planner/playbook")
        decided = s.ActionDecidedData(
            **base, action_digest="d" * 64, outcome="allow", policy_version="sha256:abc", reasons=allowed, latency_ms=0.2
        )
        authorized = s.ActionAuthorizedData(**base, authorization=auth)
        del base["args"]
        result = s.ActionResultData(
            **base, status="succeeded", result={"ok": True}, attempts=1, duration_ms=3.0, cost=s.ResultCost(usd=0.001)
        )
        events += [
            ("actions.proposed", s.ActionProposed.build(proposed, source="tidegate/planner")),
            ("actions.decided", s.ActionDecided.build(decided, source="tidegate/policy")),
            ("actions.authorized", s.ActionAuthorized.build(authorized, source="tidegate/policy")),
            ("actions.results", s.ActionSucceeded.build(result, source="tidegate/executor")),
        ]
    events.append(
        (
            "tasks.outcomes",
            s.TaskCompleted.build(
                s.TaskOutcomeData(
                    task_id=task, tenant_id="acme", workflow="support_triage", status="completed", summary="done", duration_ms=900.0
                ),
                source="tidegate/planner",
            ),
        )
    )
    return events


def bench_events(n: int, task: str, kit: KitSettings) -> list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]]:
    """(topic, value, key, headers) of a 50-event task followed by `n - 50` proposals of 1000 other tasks.

    Each is signed, as its producer would, with keys made for the run under `kit` (the audit checks every
    signature it records, so an unsigned event would stop its check early and flatter the figure).
    """
    out = []
    for topic, unsigned in [*task_of_50(task), *(("actions.proposed", proposal(i, f"bt-{i % 1000}")) for i in range(n - 50))]:
        event = sign_as_producer(kit, unsigned)
        headers = [(k, v.encode()) for k, v in s.headers_for(event).items()]
        out.append((topic, s.encode(event), event.key, headers))
    return out


async def produce(kit: KitSettings, records: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]]) -> None:
    producer = AIOKafkaProducer(acks="all", linger_ms=20, max_batch_size=512 * 1024, **kafka_options(KitSettings()))
    await producer.start()
    try:
        futures = [await producer.send(kit.topic_prefix + topic, value, key=key, headers=headers) for topic, value, key, headers in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def append_directly(
    log: PostgresAuditLog, prefix: str, records: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]], authority: Authority
) -> tuple[float, float]:
    """The write path without Kafka: observe (signature checked, as the service does) + chain + COPY, batches of 5000,
    one transaction each: (seconds, µs of CPU per event)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    offsets: dict[tuple[str, int], int] = {}
    batch = []
    for i, (topic, value, key, headers) in enumerate(records):
        partition = i % 6 if topic == "actions.proposed" else 0
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        batch.append(
            observe(topic=prefix + topic, partition=partition, offset=offset, timestamp_ms=int(time.time() * 1000), timestamp_type=0,
                    key=key, value=value, headers=headers, prefix=prefix, check=authority.check)
        )  # fmt: skip
        if len(batch) == 5000:
            await log.append(batch)
            batch = []
    await log.append(batch)
    cpu = time.process_time() - cpu_started
    print(f"  (append path: {cpu / len(records) * 1e6:.0f} µs of Python CPU per event = {len(records) / cpu:,.0f} events/s per core)")
    return time.perf_counter() - started, cpu / len(records) * 1e6


async def ingest_from_kafka(kit: KitSettings, records: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]]) -> dict[str, float]:
    """Produce the records under the kit's prefix, then time the audit service consuming them."""
    await ensure_topics(kit.kafka_bootstrap, kit.topic_prefix, catalog_topic_names())
    t0 = time.perf_counter()
    await produce(kit, records)
    print(f"  (produced {len(records)} events in {time.perf_counter() - t0:.1f} s beforehand: setup, not an audit figure)")
    svc = build(kit, AuditSettings(checkpoint_interval_s=2.0))
    started, cpu_started = time.perf_counter(), time.process_time()
    await svc.start()
    first_row_at, first_count, first_cpu = None, 0, cpu_started
    try:
        while svc.recorder.recorded < len(records):
            if svc.recorder.recorded and first_row_at is None:
                first_row_at, first_count, first_cpu = time.perf_counter(), svc.recorder.recorded, time.process_time()
            await asyncio.sleep(0.01)
        done, cpu, steady_cpu = time.perf_counter(), time.process_time() - cpu_started, time.process_time() - first_cpu
    finally:
        await svc.stop()
    if first_row_at is None:  # every record came in the first batch: no steady phase to tell apart
        first_row_at, first_count = started, 0
    steady = (len(records) - first_count) / (done - first_row_at)
    print(
        f"ingest from Kafka (the audit service): {len(records)} events in {done - started:.2f} s = {len(records) / (done - started):,.0f} "
        f"events/s counting start-up and the consumer group join; {steady:,.0f} events/s after the first committed batch"
    )
    print(
        f"  the audit process used {cpu / len(records) * 1e6:.0f} µs of CPU per event (= {len(records) / cpu:,.0f} events/s per core, "
        f"PostgreSQL's and Kafka's own CPU not counted); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    steady_us = steady_cpu / (len(records) - first_count) * 1e6
    print(f"  after the first committed batch (no start-up, login or group join): {steady_us:.0f} µs of CPU per event")
    return {"ingest_events_per_s": steady, "ingest_us_per_event": cpu / len(records) * 1e6, "ingest_steady_us_per_event": steady_us}


async def main(events: int) -> None:
    figures: dict[str, object] = {"events": events}
    kit0 = KitSettings()
    admin = local_superuser_url(kit0)
    dbname = f"tidegate_bench_{uuid.uuid4().hex[:8]}"
    run = uuid.uuid4().hex[:8]
    direct_prefix, kafka_prefix = f"bench-direct-{run}.", f"bench-{run}."
    conn = await asyncpg.connect(admin)
    await conn.execute(f"CREATE DATABASE {dbname} OWNER tidegate")
    sync = await conn.fetchval("SHOW synchronous_commit")
    await conn.close()
    keys = Path(tempfile.mkdtemp(prefix="tidegate-bench-keys-"))
    kit = KitSettings(
        database_url=with_database(kit0.database_url, dbname),
        topic_prefix=kafka_prefix,
        keys_dir=keys,  # every key of the run, private ones included, is the run's own: nothing live signs or is trusted
        operator_keys_dir=keys / "operators",
        client_keys_dir=keys / "clients",
        operator_private_keys_dir=keys / "operator-keys",
        client_private_keys_dir=keys / "client-keys",
    )
    task = f"bench-task-{run}"
    records = bench_events(events, task, kit)
    tune_gc()  # as the service process does once started (the prebuilt records stand for Kafka, not the service's heap)
    print(f"{events} events (~{sum(len(r[1]) for r in records) // events} bytes each); synchronous_commit = {sync}")
    await migrate(kit)  # as the operator would: the service logs in as its own role and never migrates
    log = await PostgresAuditLog.connect(kit.operator_database_url)
    try:
        seconds, append_us = await append_directly(log, direct_prefix, records, deployment_authority(kit, history=True))
        figures |= {"append_events_per_s": events / seconds, "append_us_per_event": append_us, "synchronous_commit": sync}
        print(f"append path alone (observe + validate + verify + hash + COPY, 5000 per transaction): {events / seconds:,.0f} events/s")
        try:
            figures |= await ingest_from_kafka(kit, records)
            db = await asyncpg.connect(kit.operator_database_url)
            try:
                valid = await db.fetchval("SELECT count(*) FROM audit.log WHERE valid AND starts_with(topic, $1)", kafka_prefix)
            finally:
                await db.close()
            print(f"  recorded as valid (contract met, signature verified): {valid:,} of {len(records):,}")
            figures["ingest_valid"] = valid
        except (OSError, KafkaError, TimeoutError) as exc:
            print(f"ingest from Kafka: not measured, Kafka unreachable ({exc!r})")

        checkpointer = Checkpointer(
            log, SigningKey.load_or_create(keys, "audit"), _discard, direct_prefix + "audit.checkpoints", 1.0, prefix=direct_prefix
        )
        await checkpointer.tick()
        report = await verify_log(log, Keyring.load(keys, "audit"), prefix=direct_prefix)
        print(
            f"verify: {report.rows} rows, {report.chains} chains, {report.checkpoints} checkpoint(s) in {report.seconds:.2f} s "
            f"= {report.rows / report.seconds:,.0f} rows/s; intact={report.ok}"
        )
        timings = []
        for _ in range(20):
            t = time.perf_counter()
            x = await explain_task(log, task, direct_prefix)
            render_markdown(x)
            timings.append((time.perf_counter() - t) * 1000)
        print(
            f"explain (task of {x.records} events, {len(x.actions)} actions; read + build + render md): "
            f"median {statistics.median(timings):.1f} ms, p95 {sorted(timings)[18]:.1f} ms over 20 runs"
        )
    finally:
        await log.close()
        conn = await asyncpg.connect(admin)
        await conn.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        await conn.close()
        await drop_bench_prefix(kit)
    emit_figures("audit", figures)


async def _discard(event: object) -> None:
    """Checkpoints of the direct run are not published."""


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="60,000 events instead of 15,000.")
    parser.add_argument("--events", type=int, default=None, help="Events to ingest (overrides --full).")
    opts = parser.parse_args()
    asyncio.run(main(opts.events or (60_000 if opts.full else 15_000)))
