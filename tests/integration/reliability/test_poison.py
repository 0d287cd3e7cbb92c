"""The poison case found with a plain Kafka client, on every consumed topic of every service and in the audit.

One record batch holds [good, a 100,000-deep JSON array, good]: the poison is dead-lettered alone
(reason, size, SHA-256), both neighbours are handled, the offsets move past all three, and the audit
log holds every record. Before, `Bus.dead_letter` raised `RecursionError` and the batch was committed
anyway: neighbours never decided, records missing from the audit log.
"""

from __future__ import annotations

import hashlib
import importlib
import uuid
from typing import Any

import pytest
from bus_helpers import Collector
from reliability_helpers import POISON, BatchProducer, audit_rows, good_event, wire
from signers import AdminBus

import schemas as s
from servicekit import Bus, KitSettings
from services.audit.app import build as build_audit
from services.audit.settings import AuditSettings

RECORD_CODES = {"invalid_event", "too_deep", "too_large", "not_finite", "handler_error"}


async def start_watcher(kit: KitSettings, service: str, rejected: list[s.EventRejected]) -> Bus:
    watcher = AdminBus(kit, "watcher")

    async def on_dead(event: s.EventRejected) -> None:
        if event.data.service == service:
            rejected.append(event)

    watcher.consume("deadletter", on_dead, group_id=f"{kit.topic_prefix}watcher")
    await watcher.start()
    return watcher


@pytest.mark.parametrize("name", ["planner", "policy", "approval", "executor"])
async def test_poison_between_two_good_records_in_one_batch_is_dead_lettered_alone_on_every_topic(
    name: str, kit: KitSettings, batch_producer: BatchProducer, wait_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDEGATE_APPROVAL_HTTP_PORT", "0")
    service = importlib.import_module(f"services.{name}.app").build(kit=kit)
    audit = build_audit(kit, AuditSettings(batch_max_records=500, checkpoint_interval_s=60, topic_discovery_ms=1000))
    topics = sorted(set(service.bus.subscriptions))
    rejected: list[s.EventRejected] = []
    watcher = await start_watcher(kit, name, rejected)
    decided = Collector(kit, ["actions.decided"])  # the policy consumes no `actions.decided`: no poison there
    if name == "policy":
        await decided.start()
    await audit.start()
    await service.start()
    sent: dict[str, tuple[int, int, s.Envelope, s.Envelope]] = {}
    try:
        for topic in topics:
            task = f"t-{uuid.uuid4().hex[:8]}"
            first, second = good_event(topic, task), good_event(topic, task)
            partition, base = await batch_producer.send_batch(topic, task.encode(), [wire(first, kit), POISON, wire(second, kit)])
            sent[topic] = (partition, base, first, second)

        def handled_past_every_batch() -> bool:
            return all(service.bus.positions.get((kit.topic_prefix + t, p), 0) >= base + 3 for t, (p, base, _, _) in sent.items())

        await wait_for(handled_past_every_batch, timeout=60, what=f"{name} past every batch")

        def poison_dead_letters() -> dict[str, s.EventRejected]:
            found = {}
            for t, (p, base, _, _) in sent.items():
                for r in rejected:
                    if (r.data.topic, r.data.partition, r.data.offset) == (kit.topic_prefix + t, p, base + 1):
                        found[t] = r
            return found if len(found) == len(sent) else {}

        poisons = await wait_for(poison_dead_letters, timeout=30, what=f"{name}'s dead letters of the poison")
        for topic, dead in poisons.items():
            assert dead.data.code == "too_deep", topic
            assert dead.data.size == len(POISON)
            assert dead.data.sha256 == hashlib.sha256(POISON).hexdigest()
        for r in rejected:  # a neighbour may be refused by its handler (unsigned, unknown task), never as a bad record
            topic = r.data.topic.removeprefix(kit.topic_prefix)
            if topic in sent and r.data.offset != sent[topic][1] + 1:
                assert r.data.code not in RECORD_CODES, (topic, r.data.code, r.data.error)

        for topic, (partition, base, _, _) in sent.items():
            full = kit.topic_prefix + topic

            async def all_three(full: str = full, partition: int = partition, base: int = base) -> dict[int, Any] | None:
                rows = await audit_rows(kit.database_url, full, partition)
                return rows if {base, base + 1, base + 2} <= set(rows) else None

            rows = await wait_for(all_three, timeout=30, what=f"audit log of {topic}")
            assert rows[base][0]
            assert rows[base + 2][0]
            assert rows[base + 1][0] is False
            assert (rows[base + 1][1] or "").startswith("too_deep")

        if name == "policy":
            _, _, first, second = sent["actions.proposed"]
            ids = {first.data.action_id, second.data.action_id}
            await wait_for(
                lambda: ids <= {e.data.action_id for e in decided.events["actions.decided"]}, timeout=30, what="both proposals decided"
            )
    finally:
        await service.stop()
        await audit.stop()
        await decided.stop()
        await watcher.stop()
