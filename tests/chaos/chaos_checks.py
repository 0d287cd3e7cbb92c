"""What the chaos suite checks after the faults, printed as counts.

Every task reaches a final state; every authorized action executed exactly once (rows in the systems
of record by idempotency key, calls the outside tool applied); nothing unauthorized executed; each
action has one result event; `tidegate audit verify --complete` passes; no consumer group is left
with lag; the policy's spend equals the sum of the executed actions' costs and no reservation is
left open.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from chaos_load import Submitted

from schemas import decode
from servicekit import ADMIN, KitSettings, kafka_options

__all__ = ["Report", "check"]

READ = ("tasks.outcomes", "actions.decided", "actions.authorized", "actions.results", "approvals")
SYSTEM_SCHEMAS = ("payments", "helpdesk", "mail", "crm", "code")


@dataclass
class Report:
    """Counts, and the failed checks (empty when everything held)."""

    counts: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    open_tasks: list[str] = field(default_factory=list)  # tasks submitted that never closed
    explained: str = ""  # what the stack held about them before it was removed (`chaos_explain`)
    kept: str = ""  # where the run's scratch directory (logs, data) was kept, when it was

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def render(self) -> str:
        lines = [f"  {k:38s} {v}" for k, v in self.counts.items()]
        lines += [f"  FAILED: {f}" for f in self.failures] or ["  every check held"]
        if self.explained:
            lines.append(f"  the open tasks, as the stack held them:\n{self.explained}")
        if self.kept:
            lines.append(f"  kept (logs in run/logs, Kafka and PostgreSQL data in infra): {self.kept}")
        return "\n".join(lines)


async def read_topics(kit: KitSettings, names: tuple[str, ...]) -> dict[str, list[tuple[Any, Any]]]:
    """Every record of the topics, from the beginning to the current end, as (record, event or None when it does not decode)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kit.kafka_bootstrap, enable_auto_commit=False, **kafka_options(kit, ADMIN))
    await consumer.start()
    out: dict[str, list[tuple[Any, Any]]] = {n: [] for n in names}
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(kit.topic_prefix + n, p) for n in names for p in consumer.partitions_for_topic(kit.topic_prefix + n) or ()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        left = {tp for tp, end in ends.items() if end > 0}
        while left:
            for tp, records in (await consumer.getmany(*left, timeout_ms=1000, max_records=5000)).items():
                name = tp.topic.removeprefix(kit.topic_prefix)
                for r in records:
                    try:
                        event = decode(name, r.value)
                    except Exception:  # counted as undecodable; the audit holds it raw
                        event = None
                    out[name].append((r, event))
                if records and records[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
    finally:
        await consumer.stop()
    return out


async def group_lag(kit: KitSettings) -> dict[str, int]:
    """Lag per consumer group of this deployment (committed offset to end offset, summed over its partitions)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN))
    consumer = AIOKafkaConsumer(bootstrap_servers=kit.kafka_bootstrap, enable_auto_commit=False, **kafka_options(kit, ADMIN))
    await admin.start()
    await consumer.start()
    try:
        groups = [g[0] for g in await admin.list_consumer_groups() if g[0].startswith(kit.topic_prefix)]
        lag: dict[str, int] = {}
        for group in groups:
            committed = await admin.list_consumer_group_offsets(group)
            ends = await consumer.end_offsets(list(committed)) if committed else {}
            lag[group.removeprefix(kit.topic_prefix)] = sum(max(0, ends[tp] - meta.offset) for tp, meta in committed.items())
        return lag
    finally:
        await consumer.stop()
        await admin.close()


async def side_effects(admin_dsn: str, inventory_db: Path) -> dict[str, list[str]]:
    """Idempotency key -> the systems of record holding a row for it (every table with an `idempotency_key` column, and the warehouse)."""
    rows: dict[str, list[str]] = defaultdict(list)
    conn = await asyncpg.connect(admin_dsn)
    try:
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.columns WHERE column_name = 'idempotency_key'"
            " AND table_schema = ANY($1::text[])",
            list(SYSTEM_SCHEMAS),
        )
        for t in tables:
            name = f"{t['table_schema']}.{t['table_name']}"
            for r in await conn.fetch(f"SELECT idempotency_key FROM {name}"):  # names from the database catalog
                rows[r["idempotency_key"]].append(name)
    finally:
        await conn.close()
    if inventory_db.exists():
        db = sqlite3.connect(inventory_db)
        try:
            for (key,) in db.execute("SELECT idempotency_key FROM applied"):
                rows[key].append("warehouse.applied")
        finally:
            db.close()
    return rows


async def money(admin_dsn: str) -> tuple[Decimal, Decimal, Decimal, Counter[str]]:
    """The policy's recorded spend (summed over tasks, and its tenant total row `*`), what is still reserved, and reservations by status."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        tasks = await conn.fetchval("SELECT coalesce(sum(amount_usd), 0) FROM policy.spend WHERE task_id <> '*'")
        tenant = await conn.fetchval("SELECT coalesce(sum(amount_usd), 0) FROM policy.spend WHERE task_id = '*'")
        held = await conn.fetchval("SELECT coalesce(sum(amount_usd), 0) FROM policy.reservations WHERE status = 'reserved'")
        statuses = Counter(
            {r["status"]: r["n"] for r in await conn.fetch("SELECT status, count(*) AS n FROM policy.reservations GROUP BY 1")}
        )
    finally:
        await conn.close()
    return Decimal(tasks), Decimal(tenant), Decimal(held), statuses


async def wait_for_no_lag(kit: KitSettings, timeout_s: float) -> dict[str, int]:
    """Poll the groups' lag until it is zero everywhere, or the deadline; the last reading."""
    deadline = time.monotonic() + timeout_s
    while True:
        lag = await group_lag(kit)
        if not any(lag.values()) or time.monotonic() > deadline:
            return lag
        await asyncio.sleep(2)


async def check(kit: KitSettings, admin_dsn: str, inventory_db: Path, sent: Submitted, audit_verify: tuple[int, str]) -> Report:
    """Every check of the suite, on what the topics, the systems of record and the policy's books hold now."""
    report = Report()
    topics = await read_topics(kit, READ)
    outcomes = {e.data.task_id: e for _, e in topics["tasks.outcomes"] if e is not None}
    authorized: dict[str, Any] = {}
    for _, e in topics["actions.authorized"]:
        if e is not None:
            authorized.setdefault(e.data.action_id, e)
    decided = defaultdict(list)
    for _, e in topics["actions.decided"]:
        if e is not None:
            decided[e.data.action_id].append(e.data.outcome)
    result_ids: dict[str, set[str]] = defaultdict(set)
    results: dict[str, Any] = {}
    for _, e in topics["actions.results"]:
        if e is not None:
            result_ids[e.data.action_id].add(e.id)
            results[e.data.action_id] = e
    undecodable = {n: sum(1 for _, e in recs if e is None) for n, recs in topics.items()}

    # 1. Every task and every outside proposal reaches a final state.
    open_tasks = report.open_tasks = sorted(set(sent.tasks) - set(outcomes))
    statuses = Counter(f"{o.data.status}{'/' + o.data.reason if o.data.reason else ''}" for t, o in outcomes.items() if t in sent.tasks)
    final = {a for a in sent.proposals if a in results or "deny" in decided.get(a, [])}
    open_proposals = sorted(set(sent.proposals) - final)
    report.counts |= {
        "tasks submitted / closed": f"{len(sent.tasks)} / {len(sent.tasks) - len(open_tasks)}",
        "task outcomes": dict(statuses),
        "outside proposals sent / final": f"{len(sent.proposals)} / {len(final)}",
        "outside proposal results": dict(Counter(f"{sent.proposals[a]}:{results[a].data.status}" for a in final if a in results)),
        "approvals granted by the approver": len(sent.approved),
    }
    if open_tasks:
        report.fail(f"{len(open_tasks)} task(s) never closed, e.g. {open_tasks[:5]}")
    if open_proposals:
        report.fail(f"{len(open_proposals)} outside proposal(s) never got a result or a denial, e.g. {open_proposals[:5]}")

    # 2. Exactly once: one side effect per executed authorized write, none without an authorization, one result event per action.
    effects = await side_effects(admin_dsn, inventory_db)
    executed = {a for a, r in results.items() if r.data.status == "succeeded"}
    unauthorized = sorted(k for k in effects if k not in authorized)
    doubled = sorted(k for k, where in effects.items() if len(where) > 1)
    missing = sorted(a for a in executed if a in authorized and a not in effects and authorized[a].data.tool in WRITES)
    without_success = sorted(k for k in effects if k in authorized and k not in executed)
    republished = sorted(a for a, ids in result_ids.items() if len(ids) > 1)
    report.counts |= {
        "actions authorized": len(authorized),
        "results (actions)": f"{len(results)} ({dict(Counter(r.data.status for r in results.values()))})",
        "side effects (rows + warehouse calls)": sum(len(w) for w in effects.values()),
        "  by system": dict(Counter(w for where in effects.values() for w in where)),
        "side effects without authorization": len(unauthorized),
        "actions with two side effects": len(doubled),
        "succeeded writes without a side effect": len(missing),
        "side effects whose result is not success": len(without_success),
        "actions with >1 result event id": len(republished),
        "undecodable records read": {k: v for k, v in undecodable.items() if v},
    }
    if unauthorized:
        report.fail(f"side effects without an authorization: {unauthorized[:5]}")
    if doubled:
        report.fail(f"actions executed twice: {doubled[:5]}")
    if missing:
        report.fail(f"succeeded writes with no row in their system: {missing[:5]}")
    if republished:
        report.fail(f"results re-published under a new event id: {republished[:5]}")

    # 3. The audit log: chains, checkpoints, and one row for every offset of every topic.
    code, output = audit_verify
    report.counts["audit verify --complete"] = "passed" if code == 0 else f"FAILED (exit {code})"
    if code != 0:
        report.fail(f"`tidegate audit verify --complete` exited {code}: {output[-1500:]}")

    # Dead letters: counted (a fault may make some on purpose; a run that must make none asserts it).
    report.counts["dead letters"] = len((await read_topics(kit, ("deadletter",)))["deadletter"])

    # 4. No consumer group left with lag.
    lag = await wait_for_no_lag(kit, 120)
    report.counts["consumer groups / total lag"] = f"{len(lag)} / {sum(lag.values())}"
    if any(lag.values()):
        report.fail(f"consumer groups left with lag: { {g: n for g, n in lag.items() if n} }")

    # 5. Money: what policy recorded as spent (per task, and the tenant's total) equals the executed actions' costs
    # plus what is still reserved (a failed call's reservation is released; an unknown outcome keeps its own until a
    # human resolves it); no other reservation is left open.
    by_task, tenant_total, held, reservations = await money(admin_dsn)
    cost = sum((Decimal(str(results[a].data.cost.usd)) for a in executed if a in authorized), Decimal(0))
    report.counts |= {
        "spend: tasks / tenant (USD)": f"{by_task:.6f} / {tenant_total:.6f}",
        "executed cost + still reserved (USD)": f"{cost:.6f} + {held:.6f}",
        "reservations by status": dict(reservations),
    }
    for what, spent in (("per task", by_task), ("tenant total", tenant_total)):
        if abs(spent - (cost + held)) > Decimal("0.000001"):
            report.fail(f"policy spend ({what}) {spent} != executed costs {cost} + reserved {held}")
    if reservations.get("reserved"):
        unknown = sum(1 for r in results.values() if r.data.status == "unknown")
        if reservations["reserved"] > unknown:
            report.fail(f"{reservations['reserved']} reservation(s) left open ({unknown} unknown outcomes hold theirs by design)")
    return report


WRITES = frozenset({"issue_refund", "add_internal_note", "draft_reply", "update_inventory", "chaos_flaky_note"})
"""Tools whose every successful call leaves one row under its idempotency key (tags are a set: a second call changes nothing)."""
