"""No record is acknowledged before it is handled or dead-lettered, whatever it holds and whatever fails around it."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError, OutOfOrderSequenceNumber
from fake_producer import KeepingProducer

import schemas as s
from servicekit import Bus, Producer
from servicekit.intake import Bounds, ErrorKind, Refused, check_bounds, classify
from servicekit.liveness import Liveness

POISON = b"[" * 100_000 + b"]" * 100_000


@dataclass
class FakeRecord:
    topic: str
    value: bytes | None
    partition: int = 0
    offset: int = 7
    key: bytes | None = b"t-1"
    headers: tuple[tuple[str, bytes], ...] = ()


class FlakyBroker(KeepingProducer):
    """Publishes, failing the first `failures` times with `error` (connects nowhere)."""

    def __init__(self, failures: int = 0, error: Exception | None = None) -> None:
        super().__init__()
        self.failures = failures
        self.error = error or KafkaConnectionError("broker down")
        self.attempts = 0

    async def send(self, topic: str, value: bytes, *, key: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise self.error
        await super().send(topic, value, key=key, headers=headers)


def proposal(action_id: str = "a-1", **args: Any) -> bytes:
    data = s.ActionProposedData(
        action_id=action_id, task_id="t-1", tenant_id="acme", step=1, tool="tag_ticket", args=args or {"ticket_id": "T-1"}, proposer="agent"
    )
    return s.encode(s.ActionProposed.build(data, source="agent"))


def make_bus(broker: FlakyBroker | None = None, bounds: Bounds | None = None) -> tuple[Bus, FlakyBroker]:
    broker = broker or FlakyBroker()
    return Bus(broker, "policy", "unused:1", "p.", bounds=bounds or Bounds()), broker


def dead_letters(broker: FlakyBroker) -> list[s.EventRejected]:
    return [s.decode("deadletter", raw) for topic, raw in broker.published if topic == "p.deadletter"]


async def test_the_deep_array_between_two_proposals_is_dead_lettered_alone_and_its_neighbours_are_handled() -> None:
    bus, broker = make_bus()
    seen: list[str] = []

    async def handler(event: Any) -> None:
        seen.append(event.data.action_id)

    for offset, value in enumerate([proposal("a-1"), POISON, proposal("a-2")]):
        await bus.handle_record("actions.proposed", FakeRecord("p.actions.proposed", value, offset=offset), handler)  # type: ignore[arg-type]
    assert seen == ["a-1", "a-2"]
    [rejected] = dead_letters(broker)
    assert (rejected.data.code, rejected.data.offset) == ("too_deep", 1)
    assert rejected.data.size == len(POISON)
    assert rejected.data.sha256 == hashlib.sha256(POISON).hexdigest()
    assert rejected.data.truncated
    assert len(rejected.data.raw_value) == 64 * 1024


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (b"x" * (2 * 1024 * 1024), "too_large"),
        (b'{"a": ' * 65 + b"1" + b"}" * 65, "too_deep"),
        (proposal().replace(b'"T-1"', b"NaN"), "not_finite"),
        (proposal().replace(b'"T-1"', b"-Infinity"), "not_finite"),
        (proposal().replace(b'"T-1"', b"[" * 70 + b"1e999" + b"]" * 70), "too_deep"),
    ],
)
async def test_values_out_of_bounds_are_dead_lettered_with_their_reason_code(value: bytes, code: str) -> None:
    bus, broker = make_bus()

    async def handler(event: Any) -> None:
        raise AssertionError("must not be called")

    await bus.handle_record("actions.proposed", FakeRecord("p.actions.proposed", value), handler)  # type: ignore[arg-type]
    [rejected] = dead_letters(broker)
    assert rejected.data.code == code


def test_an_overflowing_number_is_not_finite_where_the_scan_runs() -> None:
    with pytest.raises(Refused) as refused:
        check_bounds(b'{"note": "NaN is text here", "n": 1e999}', Bounds())
    assert refused.value.code == "not_finite"


def test_brackets_and_nan_inside_strings_are_text() -> None:
    value = json.dumps({"note": "[" * 500 + "NaN Infinity 1e999", "n": 1.5e300}).encode()
    check_bounds(value, Bounds(max_depth=8))  # no exception


def test_depth_exactly_at_the_bound_is_accepted_and_one_more_is_not() -> None:
    bounds = Bounds(max_depth=10)
    check_bounds(b"[" * 10 + b"]" * 10, bounds)
    with pytest.raises(Refused) as refused:
        check_bounds(b"[" * 11 + b"]" * 11, bounds)
    assert refused.value.code == "too_deep"


@pytest.mark.parametrize("exc", [RecursionError("deep"), MemoryError(), ValueError("x")])
async def test_any_exception_while_decoding_is_the_records_and_is_dead_lettered(monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    import servicekit._bus_handle as bus_module  # where the bus decodes a record

    def explode(topic: str, raw: bytes) -> Any:
        raise exc

    monkeypatch.setattr(bus_module, "decode_document", explode)  # what the bus parses a record with
    bus, broker = make_bus()
    await bus.handle_record("actions.proposed", FakeRecord("p.actions.proposed", proposal()), lambda e: None)  # type: ignore[arg-type, return-value]
    [rejected] = dead_letters(broker)
    assert rejected.data.code == "invalid_event"
    assert type(exc).__name__ in rejected.data.error


async def test_a_dead_letter_that_cannot_be_written_is_retried_never_skipped() -> None:
    bus, broker = make_bus(FlakyBroker(failures=3, error=RuntimeError("deadletter topic unwritable")))
    await asyncio.wait_for(bus.handle_record("actions.proposed", FakeRecord("p.actions.proposed", POISON), lambda e: None), 10)  # type: ignore[arg-type, return-value]
    assert [r.data.code for r in dead_letters(broker)] == ["too_deep"]
    assert broker.failures == 0


async def test_while_the_dead_letter_cannot_be_written_the_record_is_not_done(wait_for: Any) -> None:
    bus, broker = make_bus(FlakyBroker(failures=10**9))
    task = asyncio.create_task(bus.handle_record("actions.proposed", FakeRecord("p.actions.proposed", POISON), lambda e: None))  # type: ignore[arg-type, return-value]
    await wait_for(lambda: broker.attempts >= 3, timeout=10, what="three attempts to write the dead letter")
    assert not task.done()
    assert bus.positions == {}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        ConnectionResetError(),
        KafkaConnectionError("no broker"),
    ],
)
async def test_infrastructure_errors_are_retried_and_discard_pooled_connections(exc: Exception) -> None:
    assert classify(exc) is ErrorKind.TRANSIENT
    bus, broker = make_bus()
    discarded: list[BaseException] = []

    async def discard(error: BaseException) -> None:
        discarded.append(error)

    bus.on_transient = discard
    calls = 0

    async def handler(event: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise exc

    await asyncio.wait_for(bus.handle_record("actions.proposed", FakeRecord("p.actions.proposed", proposal()), handler), 5)  # type: ignore[arg-type]
    assert calls == 2
    assert discarded == [exc]
    assert broker.published == []


async def test_a_dead_producer_fails_the_process_and_holds_the_record_uncommitted() -> None:
    assert classify(OutOfOrderSequenceNumber()) is ErrorKind.PRODUCER_DEAD
    bus, _ = make_bus()

    async def handler(event: Any) -> None:
        raise OutOfOrderSequenceNumber()

    task = asyncio.create_task(bus.handle_record("actions.proposed", FakeRecord("p.actions.proposed", proposal()), handler))  # type: ignore[arg-type]
    await asyncio.wait_for(bus.failed.wait(), 5)
    assert isinstance(bus.failure, OutOfOrderSequenceNumber)
    assert not task.done()  # held until the process stops it: never dead-lettered, never committed
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_liveness_reports_a_record_in_handling_for_too_long() -> None:
    live = Liveness()
    with live.running():
        assert await live.stalled(stall_after_s=10, handler_limit_s=5) is None
        later = live.last_progress + 60
        assert "in handling" in (await live.stalled(stall_after_s=10, handler_limit_s=5, now=later) or "")


async def test_liveness_reports_waiting_records_with_no_progress() -> None:
    class Consumer:
        def assignment(self) -> set[str]:
            return {"tp"}

        async def end_offsets(self, tps: list[str]) -> dict[str, int]:
            return dict.fromkeys(tps, 10)

        class _subscription:
            class subscription:
                class assignment:
                    @staticmethod
                    def state_value(tp: str) -> Any:
                        return type("S", (), {"position": 4, "has_valid_position": True})()

    class Subscriber:
        consumer = Consumer()

    live = Liveness()
    live.watch(Subscriber())
    assert await live.lag() == 6
    start = live.last_progress
    assert await live.stalled(stall_after_s=30, handler_limit_s=300, now=start + 1) is None
    assert "6 records waiting" in (await live.stalled(stall_after_s=30, handler_limit_s=300, now=start + 40) or "")
    live.progressed()
    assert await live.stalled(stall_after_s=30, handler_limit_s=300, now=live.last_progress + 1) is None


async def test_publishing_on_a_producer_whose_sender_task_ended_is_a_dead_producer_not_a_hang() -> None:
    """aio-libs/aiokafka#1017: after OutOfOrderSequenceNumber the sender task is gone and sends wait forever."""
    from servicekit.intake import ProducerDead

    producer = Producer("unused:1", "policy")
    sender_task: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    sender_task.set_exception(OutOfOrderSequenceNumber())
    sender_task.exception()
    producer.client = type("P", (), {"_sender": type("S", (), {"sender_task": sender_task})(), "_closed": False})()  # type: ignore[assignment]
    bus = Bus(producer, "policy", "unused:1", "p.")
    with pytest.raises(ProducerDead):
        await asyncio.wait_for(bus.publish("deadletter", s.decode("actions.proposed", proposal())), 5)
