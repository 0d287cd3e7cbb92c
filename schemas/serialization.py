"""Bytes on the wire: encode events, decode them per topic, and the canonical JSON for digests."""

from __future__ import annotations

import hashlib
import json
import math
from types import ModuleType
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError, from_json

from schemas.envelope import FROM_THE_WIRE, Envelope
from schemas.topics import adapter_for, any_event_adapter

orjson: ModuleType | None
try:  # a C accelerator for the canonical bytes; without it (a client's own venv) the same bytes come from json
    import orjson
except ImportError:  # pragma: no cover - the services' venv has it (pyproject.toml)
    orjson = None

__all__ = [
    "CONTENT_TYPE",
    "canonical_json",
    "decode",
    "decode_any",
    "decode_document",
    "digest",
    "encode",
    "headers_for",
    "reference_canonical_json",
    "refuse_nul",
    "validate_parsed",
    "validate_raw",
]

CONTENT_TYPE = "application/cloudevents+json"


def encode(event: Envelope) -> bytes:
    """The event as structured-mode CloudEvents JSON (UTF-8)."""
    return event.model_dump_json(exclude_none=True).encode()


def headers_for(event: Envelope) -> dict[str, str]:
    """Kafka headers of an event: content type and W3C `traceparent`."""
    headers = {"content-type": CONTENT_TYPE}
    if event.traceparent:
        headers["traceparent"] = event.traceparent
    return headers


def decode(topic: str, raw: bytes | str) -> Any:
    """Parse and validate one message of `topic` (catalog name, no prefix); raises ValidationError."""
    return validate_raw(adapter_for(topic), raw)


def validate_raw(adapter: TypeAdapter[Any], raw: bytes | str) -> Any:
    """The contract's definition of a valid event of `adapter`'s topic: `validate_json`, and no U+0000 in a string."""
    event = adapter.validate_json(raw)
    refuse_nul(raw)
    return event


_NUL_ESCAPE = "\\u0000"
_NUL_ESCAPE_BYTES = _NUL_ESCAPE.encode()


def refuse_nul(raw: bytes | str, *, where: tuple[str, ...] = ("data",)) -> None:
    """Refuse a document with U+0000 in a string: valid JSON (an escape), but no service's database can keep it.

    Part of the contract: else the first service to store the event failed on it after accepting it (a
    handler error, or, for an executor, a call made whose result could not be kept). The raw text is searched;
    a match is an escape only where an odd run of backslashes ends at its `u` (after an even run it is text).
    """
    if isinstance(raw, bytes):
        if raw.find(_NUL_ESCAPE_BYTES) == -1:  # the common case: no decoding, one scan (`find`: `in` raises inside, as below)
            return
        text = raw.decode("utf-8", "replace")
    else:
        text = raw
    at = text.find(_NUL_ESCAPE)
    while at != -1:
        start = at
        while start > 0 and text[start - 1] == "\\":
            start -= 1
        if (at - start) % 2 == 0:  # an even run before this backslash: it starts an escape
            raise ValidationError.from_exception_data(
                "Envelope",
                [
                    InitErrorDetails(
                        type=PydanticCustomError(
                            "storable_text", "Strings should hold no U+0000 character (no service's database can store it)"
                        ),
                        loc=where,
                        input=text[max(0, at - 40) : at + 46],
                    )
                ],
            )
        at = text.find(_NUL_ESCAPE, at + 1)


def decode_document(topic: str, raw: bytes | str) -> tuple[Any, Any]:
    """`decode`, parsing `raw` once: the event, and the JSON document it was validated from (what a signature covers).

    The document is parsed by the parser `validate_json` uses (pydantic's: the same values as `json.loads`
    wherever both accept, big integers and repeated keys included) and validated as Python under
    `FROM_THE_WIRE`, which holds it to the wire's rules. Whatever that refuses is decided again by `validate_json`,
    so a refused value gets exactly `decode`'s error; this is about half the CPU of `decode` and `json.loads`.
    """
    adapter = adapter_for(topic)
    try:
        document = from_json(raw)
    except ValueError:  # not JSON to pydantic's parser: `decode` says why
        return adapter.validate_json(raw), json.loads(raw)
    return validate_parsed(adapter, document, raw), document


def validate_parsed(adapter: TypeAdapter[Any], document: Any, raw: bytes | str) -> Any:
    """What `adapter.validate_json(raw)` gives, from `document`, `raw` as pydantic's parser (`from_json`) read it.

    The document is validated as Python under `FROM_THE_WIRE`, which holds it to the wire's rules; whatever
    that refuses is decided again by `validate_json`, so a refused value gets exactly its error.
    """
    try:
        event = adapter.validate_python(document, context=FROM_THE_WIRE)
    except ValueError:  # not the contract (a ValidationError is a ValueError): `validate_json` says why
        event = adapter.validate_json(raw)
    refuse_nul(raw)
    return event


def decode_any(raw: bytes | str) -> Any:
    """Parse any Tidegate event by its `type` tag."""
    return any_event_adapter.validate_json(raw)


def reference_canonical_json(value: Any) -> bytes:
    """The definition of the canonical bytes: Python's `json.dumps`, keys sorted, no whitespace, UTF-8, NaN refused."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str).encode()


_ORJSON_OPTIONS = (orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS) if orjson else 0
# Where orjson's bytes may differ from the reference: a float below 1e-4 (`0.00001`, `1.5e-7` against `1e-05`,
# `1.5e-07`), and NaN or infinity (orjson writes `null`, the reference refuses them). Fast bytes with no small float
# (a number that starts a value: at the start, or after `:`, `,`, `[`, or a minus sign there) are the reference's, once a
# `null` in them is known to be a None and not a NaN; any other value takes the reference path (the same bytes, or
# its error). Text that merely looks like a small float (`"a:1e-5"`) only costs that path.
_STARTS_A_VALUE = frozenset(b":,[")
_MINUS = ord("-")
_NUMBER_CHARS = frozenset(b"0123456789.")


def _starts_a_value(fast: bytes, at: int) -> bool:
    """Whether a number at `at` would start a JSON value: at the start, after `:`, `,` or `[`, or after a minus sign that does.

    A minus sign inside a string (a UUID's `-491e-`) starts nothing: only one after a value's start is a number's sign.
    """
    if at == 0:
        return True
    before = fast[at - 1]
    if before == _MINUS:
        return at == 1 or fast[at - 2] in _STARTS_A_VALUE
    return before in _STARTS_A_VALUE


def _small_float(fast: bytes) -> bool:
    at = fast.find(b"0.0000")
    while at != -1:
        if _starts_a_value(fast, at):
            return True
        at = fast.find(b"0.0000", at + 1)
    at = fast.find(b"e-")
    while at != -1:  # `<digits>e-<digits>`: walk back over the mantissa to where the value starts
        start = at
        while start > 0 and fast[start - 1] in _NUMBER_CHARS:
            start -= 1
        if start < at and _starts_a_value(fast, start):
            return True
        at = fast.find(b"e-", at + 1)
    return False


def _all_finite(value: Any) -> bool:
    """Whether no float in `value` (through its dicts, lists and tuples) is NaN or infinite."""
    stack = [value]
    pop, push = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is str or kind is int or item is None or kind is bool:
            continue
        if kind is float:
            if item - item != 0.0:  # NaN and infinities alone give NaN here
                return False
        elif isinstance(item, dict):
            push(item.values())
        elif isinstance(item, list | tuple):
            push(item)
        elif isinstance(item, float) and not math.isfinite(item):
            return False
    return True


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON (sorted keys, no whitespace, UTF-8) used for every digest and signature.

    The bytes are exactly `reference_canonical_json`'s (a property test holds them to it); orjson makes
    them in about a tenth of the time when it is installed, and hands back to the reference wherever the
    two could differ (small floats, NaN, integers beyond 64 bits, keys that are not strings, deep nesting).
    """
    if orjson is not None:
        try:
            fast: bytes = orjson.dumps(value, default=str, option=_ORJSON_OPTIONS)
        except (TypeError, ValueError):
            pass
        else:
            # `find`, not `in`: CPython 3.11's `bytes in bytes` raises and clears a TypeError inside at every call
            if not _small_float(fast) and (fast.find(b"null") == -1 or _all_finite(value)):
                return fast
    return reference_canonical_json(value)


def digest(value: Any) -> str:
    """SHA-256 hex digest of the canonical JSON of `value`."""
    return hashlib.sha256(canonical_json(value)).hexdigest()
