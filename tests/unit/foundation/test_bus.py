"""The bus never loses a message and never dies on one: bad input goes to `deadletter` with the reason."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fake_producer import KeepingProducer

import schemas as s
from servicekit import Bus, KitSettings, Reject, deployment_authority, service_bus, service_key


@dataclass
class FakeRecord:
    topic: str
    value: bytes | None
    partition: int = 2
    offset: int = 41
    key: bytes | None = b"t-1"
    headers: tuple[tuple[str, bytes], ...] = ()


def make_bus() -> tuple[Bus, KeepingProducer]:
    broker = KeepingProducer()
    return Bus(broker, "policy", "unused:1", "p."), broker


def proposal() -> bytes:
    data = s.ActionProposedData(
        action_id="a-1",
        task_id="t-1",
        tenant_id="acme",
        step=1,
        tool="tag_ticket",
        args={"ticket_id": "T-1", "tags": ["x"]},
        proposer="agent",
    )
    return s.encode(s.ActionProposed.build(data, source="agent"))


def dead_letters(broker: KeepingProducer) -> list[s.EventRejected]:
    return [s.decode("deadletter", raw) for topic, raw in broker.published if topic == "p.deadletter"]


async def test_valid_event_reaches_the_handler() -> None:
    bus, broker = make_bus()
    seen: list[Any] = []

    async def handler(event: Any) -> None:
        seen.append(event)

    await bus.handle_record("actions.proposed", FakeRecord("p.actions.proposed", proposal()), handler)
    assert [e.data.action_id for e in seen] == ["a-1"]
    assert broker.published == []


@pytest.mark.parametrize("raw", [b"{oops", b"", b'{"type": "tidegate.action.proposed"}', None])
async def test_invalid_message_is_dead_lettered_with_position_and_reason(raw: bytes | None) -> None:
    bus, broker = make_bus()

    async def handler(event: Any) -> None:
        raise AssertionError("must not be called")

    await bus.handle_record("actions.proposed", FakeRecord("p.actions.proposed", raw), handler)
    [rejected] = dead_letters(broker)
    assert rejected.data.code == "invalid_event"
    assert rejected.data.topic == "p.actions.proposed"
    assert (rejected.data.partition, rejected.data.offset) == (2, 41)
    assert rejected.data.service == "policy"
    assert rejected.data.error.startswith("invalid event")


async def test_large_raw_value_is_truncated_and_flagged() -> None:
    bus, broker = make_bus()
    await bus.handle_record("actions.proposed", FakeRecord("p.actions.proposed", b"x" * 100_000), lambda e: None)  # type: ignore[arg-type, return-value]
    [rejected] = dead_letters(broker)
    assert rejected.data.truncated
    assert len(rejected.data.raw_value) == 64 * 1024


async def test_handler_rejection_keeps_the_event_with_the_handlers_code() -> None:
    bus, broker = make_bus()

    async def handler(event: Any) -> None:
        raise Reject(s.ReasonCode.SIGNATURE_INVALID, "signature does not verify")

    await bus.handle_record("actions.proposed", FakeRecord("p.actions.proposed", proposal()), handler)
    [rejected] = dead_letters(broker)
    assert (rejected.data.code, rejected.data.error) == ("signature_invalid", "signature does not verify")
    assert rejected.data.tenant_id == "acme"
    assert rejected.data.task_id == "t-1"


async def test_a_bug_in_a_handler_is_dead_lettered_not_fatal() -> None:
    bus, broker = make_bus()

    async def handler(event: Any) -> None:
        raise KeyError("boom")

    await bus.handle_record("actions.proposed", FakeRecord("p.actions.proposed", proposal()), handler)
    [rejected] = dead_letters(broker)
    assert rejected.data.code == "handler_error"
    assert "KeyError" in rejected.data.error


async def test_transient_errors_are_retried_until_the_handler_succeeds() -> None:
    bus, broker = make_bus()
    calls = 0

    async def handler(event: Any) -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionRefusedError("database restarting")

    await asyncio.wait_for(bus.handle_record("actions.proposed", FakeRecord("p.actions.proposed", proposal()), handler), 5)
    assert calls == 3
    assert broker.published == []


async def test_what_a_signing_bus_publishes_is_signed_by_its_key_and_passes_a_consumers_check(tmp_path: Any) -> None:
    (tmp_path / "keys").mkdir()
    kit = KitSettings(keys_dir=tmp_path / "keys")
    broker = KeepingProducer()
    bus = Bus(broker, "planner", "unused:1", "p.", signer=service_key(kit, "planner"))
    consumer = Bus(KeepingProducer(), "policy", "unused:1", "p.", authority=deployment_authority(kit))
    await bus.publish("actions.proposed", s.decode("actions.proposed", proposal()))
    [(topic, value)], [key] = broker.published, broker.keys
    seen: list[Any] = []

    async def handler(event: Any) -> None:
        seen.append(event)

    await consumer.handle_record("actions.proposed", FakeRecord(topic, value, key=key), handler)
    assert [e.keyid for e in seen] == [service_key(kit, "planner").key_id]
    assert seen[0].data == s.decode("actions.proposed", proposal()).data


async def test_a_bus_that_signs_its_own_way_publishes_what_its_sign_returns() -> None:
    class Stamping(Bus):
        def sign(self, event: s.Envelope) -> s.Envelope:
            return event.model_copy(update={"keyid": "stamp", "signature": "by-sign"})

    broker = KeepingProducer()
    await Stamping(broker, "planner", "unused:1", "p.").publish("actions.proposed", s.decode("actions.proposed", proposal()))
    [(_, value)] = broker.published
    assert (s.decode("actions.proposed", value).keyid, s.decode("actions.proposed", value).signature) == ("stamp", "by-sign")


def test_a_service_bus_fetches_with_the_deployments_wait_unless_a_consumer_gives_its_own(tmp_path: Path) -> None:
    """`TIDEGATE_FETCH_MAX_WAIT_MS` is how long the broker holds an idle consumer's fetch; a batching consumer keeps its own."""
    kit = KitSettings(run_dir=tmp_path, fetch_max_wait_ms=1234, busy_fetch_max_wait_ms=55, kafka_bootstrap="unused:1", topic_prefix="p.")
    bus = service_bus(kit, "policy", signer=service_key(kit, "policy"))
    assert (bus.fetch_max_wait_ms, bus.prefix, bus.commit_interval_s) == (1234, "p.", kit.commit_interval_s)
    idle = bus.poller("idle", group_id="g", max_records=10, topics=["p.tasks"])
    batching = bus.poller("batching", group_id="g", max_records=10, topics=["p.tasks"], fetch_min_bytes=65536, fetch_max_wait_ms=500)
    assert idle._make_consumer.keywords["fetch_max_wait_ms"] == 1234  # type: ignore[attr-defined]
    assert batching._make_consumer.keywords["fetch_max_wait_ms"] == 500  # type: ignore[attr-defined]
    # The deployment's busy wait while the consumer's batches take long; a batching consumer's wait is its batching window, kept.
    assert idle.pace is not None
    assert (idle.pace.idle_ms, idle.pace.busy_ms) == (1234, 55)
    assert batching.pace is None


def test_a_service_bus_bounds_what_a_consumer_holds_fetched_of_a_partition_unless_it_gives_its_own(tmp_path: Path) -> None:
    """`TIDEGATE_MAX_PARTITION_FETCH_BYTES` bounds a consumer's backlog in memory (256 KiB a partition, not aiokafka's 1 MiB)."""
    assert KitSettings(run_dir=tmp_path).max_partition_fetch_bytes == 256 * 1024
    kit = KitSettings(run_dir=tmp_path, max_partition_fetch_bytes=65536, kafka_bootstrap="unused:1", topic_prefix="p.")
    bus = service_bus(kit, "planner", signer=service_key(kit, "planner"))
    deployment = bus.poller("deployment", group_id="g", max_records=10, topics=["p.tasks"])
    own = bus.poller("own", group_id="g", max_records=10, topics=["p.tasks"], max_partition_fetch_bytes=4 * 1024 * 1024)
    assert deployment._make_consumer.keywords["max_partition_fetch_bytes"] == 65536  # type: ignore[attr-defined]
    assert own._make_consumer.keywords["max_partition_fetch_bytes"] == 4 * 1024 * 1024  # type: ignore[attr-defined]


def test_a_busy_wait_at_or_above_the_idle_one_is_one_wait(tmp_path: Path) -> None:
    kit = KitSettings(run_dir=tmp_path, fetch_max_wait_ms=100, busy_fetch_max_wait_ms=100, kafka_bootstrap="unused:1")
    bus = service_bus(kit, "policy", signer=service_key(kit, "policy"))
    assert bus.poller("one", group_id="g", max_records=1, topics=["t"]).pace is None
