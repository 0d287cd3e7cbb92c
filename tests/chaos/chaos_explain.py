"""What a chaos run knows about a task left open: where it stopped, which event it waits for, and where each consumer is.

A run whose task never closes is worth nothing if the stack is removed before anyone looks (test_session_expiry
lost one that way). `explain_open` gathers, for each open task: the planner's row, steps and outbox entries for it,
every record of every topic that names it (topic, partition, offset, type, and the action it is about), and per
consumer group and partition the committed offset against the end offset, so that "produced but never handled",
"handled past without handling" and "never produced" read off the report.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from servicekit import ADMIN, KitSettings, kafka_options

__all__ = ["explain_open", "render_explained"]


async def _records_naming(kit: KitSettings, needles: set[str]) -> list[dict[str, Any]]:
    """Every record of every topic of this deployment about one of `needles` (task ids): its key, or its data's `task_id`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kit.kafka_bootstrap, enable_auto_commit=False, **kafka_options(kit, ADMIN))
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        await consumer._client.force_metadata_update()
        topics = sorted(t for t in await consumer.topics() if t.startswith(kit.topic_prefix))
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        left = {tp for tp, end in ends.items() if end > 0}
        while left:
            polled = await consumer.getmany(*left, timeout_ms=2000, max_records=5000)
            if not polled:
                left = {tp for tp in left if await consumer.position(tp) < ends[tp]}
                continue
            for tp, records in polled.items():
                for r in records:
                    described = _described(tp, r)
                    hit = described.get("task_id") if described.get("task_id") in needles else described["key"]
                    if hit in needles:
                        found.append({"task": hit, **described})
                if records and records[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
    finally:
        await consumer.stop()
    return found


def _described(tp: TopicPartition, record: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"topic": tp.topic, "partition": tp.partition, "offset": record.offset, "key": (record.key or b"").decode()}
    try:
        value = json.loads(record.value)
    except (TypeError, ValueError):
        return out | {"type": "undecodable"}
    data = value.get("data") if isinstance(value, dict) else None
    out["type"] = value.get("type") if isinstance(value, dict) else None
    out["id"] = value.get("id") if isinstance(value, dict) else None
    if isinstance(data, dict):
        out |= {k: data[k] for k in ("task_id", "action_id", "tool", "step", "outcome", "status", "approval_id") if k in data}
    return out


async def _group_offsets(kit: KitSettings, topics: set[str]) -> dict[str, dict[str, str]]:
    """Per consumer group of this deployment, per partition it has committed of `topics`, or behind its end: "committed / end"."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN))
    consumer = AIOKafkaConsumer(bootstrap_servers=kit.kafka_bootstrap, enable_auto_commit=False, **kafka_options(kit, ADMIN))
    await admin.start()
    await consumer.start()
    try:
        out: dict[str, dict[str, str]] = {}
        for group, *_ in await admin.list_consumer_groups():
            if not group.startswith(kit.topic_prefix):
                continue
            committed = await admin.list_consumer_group_offsets(group)
            ends = await consumer.end_offsets(list(committed)) if committed else {}
            out[group] = {
                f"{tp.topic}[{tp.partition}]": f"{meta.offset} / {ends[tp]}"
                for tp, meta in sorted(committed.items())
                if tp.topic in topics or meta.offset != ends[tp]
            }
        return out
    finally:
        await consumer.stop()
        await admin.close()


async def _planner_rows(admin_dsn: str, task_ids: list[str]) -> dict[str, Any]:
    conn = await asyncpg.connect(admin_dsn)
    try:
        out: dict[str, Any] = {}
        for task_id in task_ids:
            task = await conn.fetchrow("SELECT status, reason, updated_at FROM planner.tasks WHERE task_id LIKE '%' || $1", task_id)
            steps = await conn.fetch(
                "SELECT step, action_id, tool, status, decision, approval_id, attempts FROM planner.steps"
                " WHERE task_id LIKE '%' || $1 ORDER BY step",
                task_id,
            )
            outbox = await conn.fetch("SELECT id, topic, created_at FROM planner.outbox WHERE task_id LIKE '%' || $1", task_id)
            out[task_id] = {
                "task": dict(task) if task is not None else None,
                "steps": [dict(s) for s in steps],
                "outbox (not yet published or not yet forgotten)": [dict(o) for o in outbox],
            }
        return out
    finally:
        await conn.close()


async def explain_open(kit: KitSettings, admin_dsn: str, task_ids: list[str]) -> dict[str, Any]:
    """What the stack holds about each of `task_ids` (tasks that never closed), and where each group is on the topics naming them."""
    out: dict[str, Any] = {}
    for what, gather in (
        ("planner", lambda: _planner_rows(admin_dsn, task_ids)),
        ("records", lambda: _records_naming(kit, set(task_ids))),
    ):
        try:
            out[what] = await gather()
        except Exception as exc:  # an explanation that fails says so; it never hides the run's own result
            out[what] = f"could not be read: {exc!r}"
    records = out["records"] if isinstance(out["records"], list) else []
    try:
        out["groups: committed / end"] = await _group_offsets(kit, {r["topic"] for r in records})
    except Exception as exc:
        out["groups: committed / end"] = f"could not be read: {exc!r}"
    return out


def render_explained(explained: dict[str, Any]) -> str:
    return json.dumps(explained, indent=1, default=str)
