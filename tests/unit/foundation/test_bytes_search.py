"""The per-event byte searches every consumer runs (bounds, NUL escapes, canonical JSON) never use `bytes in bytes`.

CPython 3.11's `needle in haystack` on bytes first tries the needle as an integer and raises and clears a TypeError
inside, at every call: on an ~800-byte event that costs about twice the search (the audit's callgrind profile,
docs/benchmarks.md). `find` gives the same answer without it. These act as that profile did: a value that counts
`in` tests on it is run through each search, and each must also still find what it looks for.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

import schemas.serialization as serialization
from servicekit.intake import Bounds, Refused, check_bounds


class Counting(bytes):
    """Bytes that count the `in` tests made on them."""

    tests = 0

    def __contains__(self, needle: object) -> bool:
        type(self).tests += 1
        return super().__contains__(needle)  # type: ignore[operator]


@pytest.fixture(autouse=True)
def _reset() -> None:
    Counting.tests = 0


EVENT = json.dumps({"type": "tidegate.action.proposed", "data": {"amount_usd": 40.5, "note": None, "args": {"a": [1, 2]}}}).encode()


def test_bounds_search_a_common_event_without_in() -> None:
    check_bounds(Counting(EVENT), Bounds())
    assert Counting.tests == 0


@pytest.mark.parametrize("odd", [b"NaN", b"Infinity", b"-Infinity"])
def test_bounds_still_refuse_nan_and_infinity(odd: bytes) -> None:
    with pytest.raises(Refused):
        check_bounds(Counting(b'{"data":{"x":' + odd + b"}}"), Bounds())


def test_nul_escape_search_without_in() -> None:
    serialization.refuse_nul(Counting(EVENT))
    assert Counting.tests == 0
    with pytest.raises(ValueError, match="U\\+0000"):
        serialization.refuse_nul(Counting(b'{"data":{"x":"a\\u0000b"}}'))


def test_canonical_json_without_in(monkeypatch: pytest.MonkeyPatch) -> None:
    real = serialization.orjson
    assert real is not None

    def dumps(value: Any, **kwargs: Any) -> bytes:
        return Counting(real.dumps(value, **kwargs))

    monkeypatch.setattr(serialization, "orjson", SimpleNamespace(dumps=dumps))
    value = {"b": None, "a": [1.5, {"c": "null"}]}
    assert serialization.canonical_json(value) == serialization.reference_canonical_json(value)
    assert Counting.tests == 0
    with pytest.raises(ValueError, match="not JSON compliant"):  # a NaN orjson writes as null is still refused, as the reference refuses it
        serialization.canonical_json({"x": float("nan")})
