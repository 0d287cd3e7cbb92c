"""Audit benchmark: ingestion rate (Kafka → hash chain → PostgreSQL), verify speed, explain latency.

Prints figures only. Runs against the local infrastructure (`tidegate infra up`) in a database and
topic prefix of its own, dropped at the end. About a minute.

    .venv/bin/python bench/audit_bench.py [--events 60000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaProducer

import schemas as s
from servicekit import Keyring, KitSettings, catalog_topic_names, ensure_topics
from services.audit.app import build
from services.audit.reading import explain_task, render_markdown
from services.audit.repository import PostgresAuditLog
from services.audit.settings import AuditSettings
from services.audit.verify import verify_log


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


async def produce(bootstrap: str, prefix: str, n: int, task: str) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        futures = []
        for topic, event in task_of_50(task):
            futures.append(
                await producer.send(
                    prefix + topic, s.encode(event), key=event.key, headers=[("content-type", b"application/cloudevents+json")]
                )
            )
        for i in range(n - 50):
            event = proposal(i, f"bt-{i % 1000}")
            futures.append(
                await producer.send(
                    prefix + "actions.proposed",
                    s.encode(event),
                    key=event.key,
                    headers=[("content-type", b"application/cloudevents+json"), ("traceparent", (event.traceparent or "").encode())],
                )
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return n


async def main(events: int) -> None:
    kit0 = KitSettings()
    base = kit0.database_url.rsplit("/", 1)[0]
    admin = base.replace("tidegate:tidegate@", "postgres:postgres@") + "/postgres"
    dbname = f"tidegate_bench_{uuid.uuid4().hex[:8]}"
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    conn = await asyncpg.connect(admin)
    await conn.execute(f"CREATE DATABASE {dbname} OWNER tidegate")
    sync = await conn.fetchval("SHOW synchronous_commit")
    await conn.close()
    keys = Path(tempfile.mkdtemp(prefix="tidegate-bench-keys-"))
    kit = KitSettings(database_url=f"{base}/{dbname}", topic_prefix=prefix, keys_dir=keys)
    try:
        await ensure_topics(kit.kafka_bootstrap, prefix, catalog_topic_names())
        task = f"bench-task-{uuid.uuid4().hex[:6]}"
        t0 = time.perf_counter()
        await produce(kit.kafka_bootstrap, prefix, events, task)
        print(f"produced {events} events in {time.perf_counter() - t0:.1f} s (setup, not a figure of the audit)")

        svc = build(kit, AuditSettings(checkpoint_interval_s=2.0))
        started = time.perf_counter()
        await svc.start()
        log = PostgresAuditLog(svc.process.pool)  # type: ignore[arg-type]
        first_row_at = None
        while True:
            count = svc.recorder.recorded
            if count and first_row_at is None:
                first_row_at = time.perf_counter()
            if count >= events:
                break
            await asyncio.sleep(0.05)
        done = time.perf_counter()
        await svc.stop()
        assert first_row_at is not None
        print(f"synchronous_commit = {sync}; batches of up to {AuditSettings().batch_max_records} records, one COPY + commit each")
        rate = events / (done - first_row_at)
        print(
            f"ingest: {events} events in {done - first_row_at:.2f} s from first row to last = {rate:,.0f} events/s "
            f"({events / (done - started):,.0f}/s including start-up and the consumer group join)"
        )

        log = await PostgresAuditLog.connect(kit.database_url)
        try:
            report = await verify_log(log, Keyring.load(keys, "audit"), prefix=prefix)
            print(
                f"verify: {report.rows} rows, {report.chains} chains, {report.checkpoints} checkpoints in {report.seconds:.2f} s "
                f"= {report.rows / report.seconds:,.0f} rows/s; intact={report.ok}"
            )

            timings = []
            for _ in range(20):
                t = time.perf_counter()
                x = await explain_task(log, task, prefix)
                render_markdown(x)
                timings.append((time.perf_counter() - t) * 1000)
            print(
                f"explain (50-event task, read + build + render md): median {statistics.median(timings):.1f} ms, "
                f"p95 {sorted(timings)[18]:.1f} ms over 20 runs ({x.records} records, {len(x.actions)} actions)"
            )
        finally:
            await log.close()
    finally:
        conn = await asyncpg.connect(admin)
        await conn.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    asyncio.run(main(parser.parse_args().events))
