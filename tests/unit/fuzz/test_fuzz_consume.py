"""Every consumed topic, fuzzed through the kit's consume path: a handled record or a dead letter with its reason, never a crash.

Each example sends one hostile value (any bytes, JSON of the wrong shape, or a valid envelope with
hostile data: huge strings, deep nesting, NaN/Infinity, unicode edge cases, mismatched ids) and then
a well-formed event, through `Bus.handle_record` (what the single, batch and lane paths call per record).
The signature check is left out (`authority=None`) so the hostile data reaches the contract and the
handler: tests/security prove unsigned events are refused before either.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import pytest
from fake_producer import KeepingProducer
from fuzz_inputs import SAMPLES, hostile_value, paths_of, set_at, value_at
from hypothesis import given
from hypothesis import strategies as st

from schemas import EventRejected, ReasonCode, decode
from servicekit import Bus
from services.audit.handlers import observe_record

CONSUMED = sorted(SAMPLES)  # every catalog topic a service consumes has an example event
GOOD: dict[str, bytes] = {topic: json.dumps(doc).encode() for topic, doc in SAMPLES.items()}


@dataclass
class Record:
    topic: str
    value: bytes | None
    offset: int
    partition: int = 0
    key: bytes | None = b"t-1"
    headers: tuple[tuple[str, bytes], ...] = ()


def dead_letters(broker: KeepingProducer) -> list[EventRejected]:
    return [decode("deadletter", raw) for topic, raw in broker.published if topic == "p.deadletter"]


async def consume(topic: str, values: list[bytes]) -> tuple[list[Any], list[EventRejected]]:
    broker = KeepingProducer()
    bus = Bus(broker, "fuzz", "unused:1", "p.")
    handled: list[Any] = []

    async def handler(event: Any) -> None:
        handled.append(event)

    for offset, value in enumerate(values):
        await bus.handle_record(topic, Record(f"p.{topic}", value, offset), handler)  # type: ignore[arg-type]
    return handled, dead_letters(broker)


@pytest.mark.parametrize("topic", CONSUMED)
@given(data=st.data())
def test_a_hostile_record_is_handled_or_dead_lettered_with_a_reason_and_the_next_good_record_is_handled(
    topic: str, data: st.DataObject
) -> None:
    value = data.draw(hostile_value(topic), label="value")
    handled, rejected = asyncio.run(consume(topic, [value, GOOD[topic]]))
    assert len(handled) + len(rejected) == 2, "each record is handled or dead-lettered, exactly once"
    assert handled, "the good record after it was handled"
    assert handled[-1].id == SAMPLES[topic]["id"]
    for dead in rejected:
        assert dead.data.offset == 0
        assert dead.data.code
        assert dead.data.code != ReasonCode.HANDLER_ERROR
        assert dead.data.size == len(value)
    if b"NaN" in value or b"Infinity" in value or b"e999" in value:
        assert all(d.data.code in {"not_finite", "invalid_event", "too_deep", "too_large"} for d in rejected)


def number_places() -> list[tuple[str, tuple[Any, ...]]]:
    """Every number of every example event, and every free-form object (args, result, input, facts, settings)."""
    places = []
    for topic, doc in SAMPLES.items():
        for path in paths_of(doc):
            value = value_at(doc, path)
            if (type(value) in (int, float)) or (path[-1] in {"args", "result", "input", "facts", "settings"} and isinstance(value, dict)):
                places.append((topic, path))
    return places


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999", "-1E400"])
@pytest.mark.parametrize(("topic", "path"), number_places(), ids=lambda p: ".".join(map(str, p)) if isinstance(p, tuple) else p)
def test_a_non_finite_number_in_any_number_or_object_is_refused_as_not_finite(topic: str, path: tuple[Any, ...], token: str) -> None:
    doc = json.loads(json.dumps(SAMPLES[topic]))
    target = value_at(doc, path)
    set_at(doc, path, {**target, "amount_usd": "HOLE"} if isinstance(target, dict) else "HOLE")
    handled, rejected = asyncio.run(consume(topic, [json.dumps(doc).replace('"HOLE"', token).encode()]))
    assert handled == []
    assert [d.data.code for d in rejected] == ["not_finite"]


@dataclass
class AuditRecord(Record):
    timestamp: int = 1_764_000_000_000
    timestamp_type: int = 0


@pytest.mark.parametrize("topic", CONSUMED)
@given(data=st.data())
def test_the_audit_keeps_any_record_of_any_topic_raw_with_the_reason_it_is_not_an_event(topic: str, data: st.DataObject) -> None:
    value = data.draw(hostile_value(topic), label="value")
    observed = observe_record(AuditRecord(f"p.{topic}", value, 0), "p.")  # type: ignore[arg-type]
    assert observed.value == value  # the bytes themselves, whatever they are: the log is complete by construction
    assert observed.valid or observed.invalid_reason
    good = observe_record(AuditRecord(f"p.{topic}", GOOD[topic], 1), "p.")  # type: ignore[arg-type]
    assert (good.valid, good.event_id) == (True, SAMPLES[topic]["id"])


@pytest.mark.parametrize("topic", CONSUMED)
def test_a_lone_surrogate_in_the_tenant_still_makes_a_dead_letter(topic: str) -> None:
    """Found by the fuzzer: `json.loads` reads the bytes of a lone surrogate, and the dead letter could not be built."""
    value = b'{"tenantid":"\xed\xa0\x80","subject":"\xed\xb0\x80","data":{}}'
    handled, rejected = asyncio.run(consume(topic, [value, GOOD[topic]]))
    assert [h.id for h in handled] == [SAMPLES[topic]["id"]]
    assert [(d.data.code, d.data.tenant_id, d.data.task_id) for d in rejected] == [("invalid_event", "?", "?")]
