"""`decode_document` (the consume path's one parse) against `decode` and `json.loads`, on every consumed topic's hostile values.

The kit (and the audit) parses a record once and validates the parsed document as Python; these hold it to what
`validate_json` accepts and refuses (with the same error), and the document it hands to the signature
check to the one `json.loads` reads from the same bytes.
"""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import pytest
from fuzz_inputs import SAMPLES, hostile_value
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas import decode, decode_document
from schemas.envelope import REQUIRED_ATTRIBUTES
from schemas.serialization import validate_raw
from services.audit import records, rows

CONSUMED = sorted(SAMPLES)


def verdict(call: Any) -> tuple[str, Any]:
    try:
        return "accepted", call()
    except ValidationError as exc:
        return "refused", [(e["type"], e["loc"], e["msg"]) for e in exc.errors()]  # what a dead letter says


@pytest.mark.parametrize("topic", CONSUMED)
@given(data=st.data())
def test_decode_document_accepts_and_refuses_what_decode_does_and_hands_on_the_document_json_loads_reads(
    topic: str, data: st.DataObject
) -> None:
    value = data.draw(hostile_value(topic), label="value")
    expected, outcome = verdict(lambda: decode(topic, value)), verdict(lambda: decode_document(topic, value))
    assert outcome[0] == expected[0]
    if expected[0] == "refused":
        assert outcome[1] == expected[1], "the same reasons, so the same dead letter"
        return
    event, document = outcome[1]
    assert event == expected[1]
    assert json.dumps(document, sort_keys=True) == json.dumps(json.loads(value), sort_keys=True)


@pytest.mark.parametrize("topic", CONSUMED)
@pytest.mark.parametrize("attribute", REQUIRED_ATTRIBUTES)
def test_decode_document_refuses_an_event_without_a_required_attribute_rather_than_inventing_it(topic: str, attribute: str) -> None:
    raw = json.dumps({k: v for k, v in SAMPLES[topic].items() if k != attribute}).encode()
    refused = verdict(lambda: decode_document(topic, raw))
    assert refused[0] == "refused"
    assert refused == verdict(lambda: decode(topic, raw))


@pytest.mark.parametrize("topic", CONSUMED)
def test_decode_document_keeps_big_integers_and_the_last_of_repeated_keys_as_json_loads_does(topic: str) -> None:
    raw = json.dumps(SAMPLES[topic]).encode()
    raw = raw[:-1] + b',"x-big":123456789012345678901234567890123,"x-big":-98765432109876543210987654321}'
    try:
        _, document = decode_document(topic, raw)
    except ValidationError:  # an event that forbids extra attributes: decode refuses it too
        with pytest.raises(ValidationError):
            decode(topic, raw)
        return
    assert document == json.loads(raw)
    assert document["x-big"] == -98765432109876543210987654321


@pytest.mark.parametrize("topic", CONSUMED)
@given(data=st.data())
def test_the_audit_records_each_hostile_value_as_valid_or_invalid_for_the_reason_validate_json_gives(
    topic: str, data: st.DataObject
) -> None:
    """The audit validates the value it parsed once (`validate_parsed`): the same record and reason as `validate_raw` of its bytes."""
    value = data.draw(hostile_value(topic), label="value")

    def seen() -> rows.Observed:
        return records.observe(
            topic=f"tidegate.{topic}", partition=0, offset=1, timestamp_ms=0, timestamp_type=0, key=None, value=value,
            headers=None, prefix="tidegate.",
        )  # fmt: skip

    got = seen()
    with mock.patch.object(records, "validate_parsed", lambda adapter, document, raw: validate_raw(adapter, raw)):
        assert got == seen()
