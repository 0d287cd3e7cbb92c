"""The canonical bytes every signature and digest covers: the fast path must write exactly the reference's.

A signature made by one service (or by an outside producer following docs/security/signatures.md) is
checked by another over bytes each computes itself; one differing byte refuses every event that holds
such a value. So the accelerated `canonical_json` is held to the reference (`json.dumps`) on arbitrary
JSON values, on every float class where the two serialisers format differently, and on its errors.
"""

from __future__ import annotations

import math
import struct
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from enum import IntEnum, StrEnum

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.serialization import canonical_json, reference_canonical_json

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_json = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


def _outcome(function: Callable[[object], bytes], value: object) -> bytes | type[Exception]:
    try:
        return function(value)
    except Exception as exc:  # the fast path must fail exactly where the reference fails
        return type(exc)


@settings(max_examples=200, deadline=None)
@given(_json)
def test_any_json_value_has_the_reference_bytes(value: object) -> None:
    assert _outcome(canonical_json, value) == _outcome(reference_canonical_json, value)


@settings(max_examples=1500, deadline=None)
@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_every_float_bit_pattern_has_the_reference_bytes(bits: int) -> None:
    (value,) = struct.unpack("<d", bits.to_bytes(8, "little"))
    assert _outcome(canonical_json, {"usd": value}) == _outcome(reference_canonical_json, {"usd": value})


@pytest.mark.parametrize(
    "value",
    [
        1e-05, 1.5e-07, 0.0001, 0.000123, 1e-10, 5e-324, 1e16, 1e15, 1.2345678901234568e17, 1.7976931348623157e308,
        -0.0, 0.1 + 0.2, 2**63 - 1, 2**63, -(2**63) - 1, 10**30,
    ],
)  # fmt: skip
def test_floats_and_integers_at_the_format_boundaries(value: float) -> None:
    assert canonical_json([value]) == reference_canonical_json([value])


def test_non_finite_numbers_are_refused_like_the_reference() -> None:
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="not JSON compliant"):
            canonical_json({"amount": value})
        with pytest.raises(ValueError, match="not JSON compliant"):  # beside a None, deep in lists and tuples
            canonical_json({"approval_id": None, "args": [{"x": (1, [value])}]})
        with pytest.raises(ValueError, match="not JSON compliant"):  # in a dict subclass
            canonical_json({"approval_id": None, "args": OrderedDict(x=value)})


def test_text_escapes_and_key_order_match() -> None:
    text = '\u2028\x7f\x00\n\t\x1f"\\é😀 null e- 0.0000'
    value = {"b": text, "a": [1, {"é": 1, "e": 2, "Z": 3}], "": None}
    assert canonical_json(value) == reference_canonical_json(value)


def test_values_json_cannot_write_are_written_as_their_str() -> None:
    class Colour(StrEnum):
        RED = "red"

    class Level(IntEnum):
        HIGH = 3

    when = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
    value = {"when": when, "colour": Colour.RED, "level": Level.HIGH, "amount": Decimal("1.50"), "raw": b"x", "tags": {1}}
    assert canonical_json(value) == reference_canonical_json(value)
    assert b'"when":"2026-12-01 11:00:00+00:00"' in canonical_json(value)


def test_lone_surrogates_and_mixed_keys_fail_as_the_reference_does() -> None:
    with pytest.raises(UnicodeEncodeError):
        canonical_json({"text": "\ud800"})
    with pytest.raises(TypeError):
        canonical_json({1: "a", "b": 2})


def test_an_event_with_hyphenated_ids_and_small_text_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import schemas.serialization as serialization

    def refuse(value: object) -> bytes:
        raise AssertionError("the reference path was taken")

    monkeypatch.setattr(serialization, "reference_canonical_json", refuse)
    event = {
        "id": "3f9a1c2b-7d4e-4e1f-9a2b-0c1d2e3f4a5b",
        "subject": "a4c2f0e1-491e-4b2a-8c3d-0e1f2a3b4c5d",  # `-491e-` reads like a number's sign, mantissa and exponent
        "keyid": "policy-3f9a1c2b7d4e",
        "type": "tidegate.action.proposed",
        "data": {"args": {"note": "re-send the e-mail", "amount_usd": 12.5, "ratio": 0.0002}, "tainted_args": []},
        "approval_id": None,  # an authorization's message holds nulls
    }
    assert serialization.canonical_json(event) == reference_canonical_json(event)
