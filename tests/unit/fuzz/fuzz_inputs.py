"""Strategies for hostile inputs: any bytes, JSON of the wrong shape, valid envelopes carrying hostile data."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from schemas import encode
from schemas.examples import sample_events

# One valid event per consumed topic (catalog name), as the contract's examples give them.
SAMPLES: dict[str, dict[str, Any]] = {}
for _topic, _event in sample_events():
    SAMPLES.setdefault(_topic, json.loads(encode(_event)))

# Strings that break naive code: control characters, lone surrogates (escaped), bidi overrides,
# non-characters, combining marks, a NUL, and the texts "NaN" and "Infinity".
EDGE_STRINGS = st.sampled_from(
    [
        "",
        "\x00",
        "\ud800",
        "\udfff",
        "\u202e\u202dabc",
        "\ufffe\uffff",
        "e\u0301" * 50,
        "\U0001f4a9" * 20,
        "NaN",
        "-Infinity",
        " " * 3,
        "\n\r\t",
    ]
)
HOSTILE_STRINGS = st.one_of(st.text(max_size=200), EDGE_STRINGS, st.integers(10_000, 300_000).map(lambda n: "x" * n))
HOSTILE_NUMBERS = st.one_of(
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "1" + "0" * 400, "-0", "1e-400", "0.1e309"]),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)

TOKEN = "\u2063HOSTILE\u2063"  # replaced by a raw JSON fragment after dumping (a bare NaN cannot be dumped otherwise)


def paths_of(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths_of(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths_of(v, (*prefix, i))
    return out


def value_at(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def set_at(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        doc = doc[step]
    doc[path[-1]] = value


@st.composite
def hostile_envelope(draw: st.DrawFn, topic: str) -> bytes:
    """A valid event of `topic` with one place replaced by something hostile (a string, a number token, deep nesting, a wrong type)."""
    doc = json.loads(json.dumps(SAMPLES[topic]))
    path = draw(st.sampled_from(paths_of(doc)))
    kind = draw(st.sampled_from(["string", "number", "deep", "json", "mismatch"]))
    raw_fragment: str | None = None
    if kind == "string":
        set_at(doc, path, draw(HOSTILE_STRINGS))
    elif kind == "number":
        raw_fragment = draw(HOSTILE_NUMBERS)
    elif kind == "deep":
        depth = draw(st.integers(30, 100_000))
        raw_fragment = "[" * depth + "]" * depth
    elif kind == "json":
        set_at(doc, path, draw(JSON_VALUES))
    else:  # ids that do not agree with each other
        doc["subject"] = draw(st.text(min_size=1, max_size=40))
        if isinstance(doc.get("data"), dict):
            doc["data"]["tenant_id"] = draw(st.sampled_from(["globex", "", "acme\x00", "*"]))
    if raw_fragment is not None:
        set_at(doc, path, TOKEN)
        return (
            json.dumps(doc, ensure_ascii=False)
            .replace(json.dumps(TOKEN, ensure_ascii=False), raw_fragment)
            .encode("utf-8", "surrogatepass")
        )
    return json.dumps(doc, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


def hostile_value(topic: str) -> st.SearchStrategy[bytes]:
    """Any bytes, JSON of the wrong shape, or a valid envelope with hostile data."""
    return st.one_of(
        st.binary(max_size=2000),
        JSON_VALUES.map(lambda v: json.dumps(v).encode()),
        hostile_envelope(topic),
    )
