"""What the audit log stores for one Kafka record, and the canonical bytes its hash covers.

Pure: a Kafka record goes in, an `Observed` record comes out (raw bytes kept, event fields read
when the value parses); `LogRow` adds its chain position and hashes. Every stored column is in
the hash, so no column can be changed without breaking the chain.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from json.encoder import encode_basestring as _json_str  # what json.dumps(ensure_ascii=False) uses
from typing import Any, NamedTuple, Protocol

from pydantic import TypeAdapter, ValidationError
from pydantic_core import from_json

from schemas import ReasonCode, canonical_json, topic_spec, validate_parsed
from schemas.topics import any_event_adapter
from servicekit.authority import broker_time_ms
from servicekit.intake import Bounds, Refused, check_bounds

__all__ = [
    "COLUMNS",
    "GENESIS",
    "Fingerprint",
    "LogRow",
    "Observed",
    "SignatureCheck",
    "chain_hash",
    "content_bytes",
    "headers_json",
    "invalid_code",
    "kafka_fingerprint",
    "linked",
    "observe",
    "row_content",
    "trace_id_of",
]

GENESIS = b"\x00" * 32
"""`prev_hash` of the first row of every chain."""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TEXT_LIMIT = 1000
REASON_LIMIT = 50

COLUMNS = (
    "topic",
    "partition",
    "kafka_offset",
    "seq",
    "kafka_ts",
    "ts_type",
    "key",
    "headers",
    "value",
    "valid",
    "invalid_reason",
    "event_id",
    "event_type",
    "tenant_id",
    "task_id",
    "action_id",
    "tool",
    "outcome",
    "reasons",
    "trace_id",
    "traceparent",
    "event_time",
    "duplicate",
    "recorded_at",
    "prev_hash",
    "hash",
)
"""Columns of `audit.log`, in table order; all but the last (`hash`) are hashed, in this order."""


DEFAULT_BOUNDS = Bounds()


class Observed(NamedTuple):
    """One Kafka record as the audit sees it, before it has a place in a chain."""

    topic: str
    partition: int
    kafka_offset: int
    kafka_ts: datetime
    ts_type: int
    key: bytes | None
    headers: list[dict[str, str]]
    value: bytes | None
    valid: bool
    invalid_reason: str | None
    event_id: str | None
    event_type: str | None
    tenant_id: str | None
    task_id: str | None
    action_id: str | None
    tool: str | None
    outcome: str | None
    reasons: list[str]
    trace_id: str | None
    traceparent: str | None
    event_time: datetime | None
    headers_json: str | None = None
    """`headers` as canonical JSON (made once: hashed, then handed to the jsonb column); None: made when needed."""


class LogRow(NamedTuple):
    """One row of `audit.log`: an observed record with its chain position and hashes."""

    topic: str
    partition: int
    kafka_offset: int
    seq: int
    kafka_ts: datetime
    ts_type: int
    key: bytes | None
    headers: list[dict[str, str]]
    value: bytes | None
    valid: bool
    invalid_reason: str | None
    event_id: str | None
    event_type: str | None
    tenant_id: str | None
    task_id: str | None
    action_id: str | None
    tool: str | None
    outcome: str | None
    reasons: list[str]
    trace_id: str | None
    traceparent: str | None
    event_time: datetime | None
    duplicate: bool
    recorded_at: datetime
    prev_hash: bytes
    hash: bytes

    def as_tuple(self) -> tuple[Any, ...]:
        """Values in `COLUMNS` order (what COPY writes)."""
        return tuple(self)

    @classmethod
    def link(cls, obs: Observed, *, seq: int, prev_hash: bytes, duplicate: bool, recorded_at: datetime) -> LogRow:
        """Place `obs` at `seq` after a row whose hash is `prev_hash`, and compute its own hash."""
        return linked(obs, seq, prev_hash, duplicate, recorded_at)

    def hashed_values(self) -> tuple[Any, ...]:
        """The hashed columns' values (every column but `prev_hash` and `hash`), in order."""
        return tuple(self[:-2])

    def expected_hash(self) -> bytes:
        """The hash this row must carry given its `prev_hash` and content."""
        return chain_hash(self.prev_hash, content_bytes(self.hashed_values()))


class Fingerprint(NamedTuple):
    """What of a record came from Kafka, besides its position: its timestamp and type, key, headers and value (bytes as SHA-256).

    The same for a row and for the record it was made of: a redelivery of the record a row holds has its row's
    fingerprint; any other record at that position does not (tamper evidence: `chain.Conflict`, `content.py`).
    """

    kafka_ts: datetime
    ts_type: int
    key_sha256: bytes | None
    headers: str
    value_sha256: bytes | None

    @classmethod
    def of(cls, record: Observed | LogRow) -> Fingerprint:
        """The fingerprint of an observed record or of a row."""
        headers = record.headers_json if isinstance(record, Observed) and record.headers_json is not None else headers_json(record.headers)
        return cls(record.kafka_ts, record.ts_type, _sha256(record.key), headers, _sha256(record.value))

    def differences(self, other: Fingerprint) -> list[str]:
        """The parts of the record that differ from `other`'s (`timestamp`, `timestamp type`, `key`, `headers`, `value`)."""
        names = ("timestamp", "timestamp type", "key", "headers", "value")
        return [name for name, mine, theirs in zip(names, self, other, strict=True) if mine != theirs]

    def digest(self) -> bytes:
        """One SHA-256 of the whole fingerprint, length-prefixed as the chain's content (what names a record in `audit.conflicts`)."""
        parts = (
            _time(self.kafka_ts),
            _number(self.ts_type),
            _raw(self.key_sha256),
            _framed(self.headers.encode()),
            _raw(self.value_sha256),
        )
        return hashlib.sha256(b"".join(parts)).digest()


def _sha256(raw: bytes | None) -> bytes | None:
    return None if raw is None else hashlib.sha256(raw).digest()


def kafka_fingerprint(
    *, timestamp_ms: int, timestamp_type: int, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None
) -> Fingerprint:
    """The `Fingerprint` of a Kafka record as read from the bus, without observing its value (`observe` stores these same fields)."""
    return Fingerprint(_kafka_time(timestamp_ms), timestamp_type, _sha256(key), _headers(headers)[1], _sha256(value))


_NULL = b"\x00"
_LEN = struct.Struct(">I")
_HEAD = struct.Struct(">BI").pack  # a frame's head: `_framed(raw)` is `_HEAD(1, len(raw)) + raw`
_TRUE = b"\x01" + _LEN.pack(1) + b"t"
_FALSE = b"\x01" + _LEN.pack(1) + b"f"


def _framed(raw: bytes) -> bytes:
    return _HEAD(1, len(raw)) + raw


def _field(value: Any) -> bytes:
    """The reference encoding of one value: length-prefixed, so no two different rows encode alike.

    `content_bytes` uses faster encoders per column that produce exactly these bytes (a unit test
    holds them to it).
    """
    if value is None:
        return _NULL
    if isinstance(value, bool):
        raw = b"t" if value else b"f"
    elif isinstance(value, int):
        raw = str(value).encode()
    elif isinstance(value, bytes):
        raw = value
    elif isinstance(value, str):
        raw = value.encode()
    elif isinstance(value, datetime):
        raw = value.astimezone(UTC).isoformat(timespec="microseconds").encode()
    else:  # lists and dicts (headers, reasons)
        raw = canonical_json(value)
    return _framed(raw)


def _text(value: Any) -> bytes:
    # `_framed(value.encode())`, written out: called for six columns of every row
    if value is None:
        return _NULL
    raw: bytes = value.encode()
    return _HEAD(1, len(raw)) + raw


def _number(value: Any) -> bytes:
    if value is None:
        return _NULL
    raw = str(value).encode()
    return _HEAD(1, len(raw)) + raw


def _raw(value: Any) -> bytes:
    return _NULL if value is None else _framed(value)


def _flag(value: Any) -> bytes:
    return _NULL if value is None else (_TRUE if value else _FALSE)


@lru_cache(maxsize=8192)
def _time(value: datetime | None) -> bytes:
    # Cached: a batch shares its recorded_at, and Kafka timestamps repeat within a millisecond.
    return _NULL if value is None else _framed(value.astimezone(UTC).isoformat(timespec="microseconds").encode())


@lru_cache(maxsize=4096)
def _label(value: str | None) -> bytes:
    # `_text` of a column whose values repeat (topic, event type, tenant, tool, outcome): cached.
    return _text(value)


@lru_cache(maxsize=1024)
def _small_number(value: int | None) -> bytes:
    # `_number` of a column whose values repeat (partition, timestamp type): cached.
    return _number(value)


def headers_json(value: Any) -> str:
    """Canonical JSON of a row's `headers` (what the hash covers and the jsonb column is given)."""
    parts = []
    for item in value:
        if type(item) is not dict or not all(type(k) is str and type(v) is str for k, v in item.items()):
            return canonical_json(value).decode()
        parts.append("{" + ",".join(_json_str(k) + ":" + _json_str(item[k]) for k in sorted(item)) + "}")
    return "[" + ",".join(parts) + "]"


def _string_list(value: Any) -> bytes:
    if all(type(v) is str for v in value):
        return _framed(("[" + ",".join(_json_str(v) for v in value) + "]").encode())
    return _field(value)


_NO_REASONS = b"\x01" + _LEN.pack(2) + b"[]"  # `_string_list([])`


def _string_dicts(value: Any) -> bytes:
    # Headers: a list of small {str: str} objects; canonical JSON written by hand (same bytes).
    return _framed(headers_json(value).encode())


_ENCODERS: dict[str, Callable[[Any], bytes]] = {
    "topic": _text, "partition": _number, "kafka_offset": _number, "seq": _number, "kafka_ts": _time, "ts_type": _number,
    "key": _raw, "headers": _string_dicts, "value": _raw, "valid": _flag, "invalid_reason": _text, "event_id": _text,
    "event_type": _text, "tenant_id": _text, "task_id": _text, "action_id": _text, "tool": _text, "outcome": _text,
    "reasons": _string_list, "trace_id": _text, "traceparent": _text, "event_time": _time, "duplicate": _flag,
    "recorded_at": _time,
}  # fmt: skip
_COLUMN_ENCODERS = tuple(_ENCODERS[c] for c in COLUMNS[:-2])


def content_bytes(values: Sequence[Any]) -> bytes:
    """Canonical bytes of a row's hashed values (topic … recorded_at, in `COLUMNS` order)."""
    return b"".join([encode(v) for encode, v in zip(_COLUMN_ENCODERS, values, strict=True)])


def row_content(obs: Observed, seq: int, duplicate: bool, recorded_at: datetime) -> bytes:
    """`content_bytes` of the row `obs` makes at `seq`: the same bytes, without building its values first (once per row).

    The key, headers and value (most of a row's bytes) are joined once, after their frames' heads, not framed first.
    """
    headers = (obs.headers_json if obs.headers_json is not None else headers_json(obs.headers)).encode()
    key, value = obs.key, obs.value
    return b"".join((
        _label(obs.topic), _small_number(obs.partition), _number(obs.kafka_offset), _number(seq), _time(obs.kafka_ts),
        _small_number(obs.ts_type), _NULL if key is None else _HEAD(1, len(key)), key or b"", _HEAD(1, len(headers)), headers,
        _NULL if value is None else _HEAD(1, len(value)), value or b"", _flag(obs.valid), _text(obs.invalid_reason),
        _text(obs.event_id), _label(obs.event_type), _label(obs.tenant_id), _text(obs.task_id), _text(obs.action_id),
        _label(obs.tool), _label(obs.outcome), _string_list(obs.reasons) if obs.reasons else _NO_REASONS, _text(obs.trace_id),
        _text(obs.traceparent), _time(obs.event_time), _flag(duplicate), _time(recorded_at),
    ))  # fmt: skip


def linked(obs: Observed, seq: int, prev_hash: bytes, duplicate: bool, recorded_at: datetime) -> LogRow:
    """`LogRow.link`, called positionally (once per row appended)."""
    digest = hashlib.sha256(prev_hash + row_content(obs, seq, duplicate, recorded_at)).digest()  # `chain_hash`
    return _new_row(LogRow, (*obs[:3], seq, *obs[3:21], duplicate, recorded_at, prev_hash, digest))


_new_row = tuple.__new__


def reference_content_bytes(values: Sequence[Any]) -> bytes:
    """`content_bytes` by the generic reference encoding (slow; for tests and audits of the format)."""
    return b"".join(_field(v) for v in values)


def chain_hash(prev_hash: bytes, content: bytes) -> bytes:
    """SHA-256 of the previous row's hash followed by this row's canonical content."""
    return hashlib.sha256(prev_hash + content).digest()


# --- observing a Kafka record -----------------------------------------------------------------


def _clean(value: Any, limit: int = TEXT_LIMIT) -> str | None:
    """A string PostgreSQL text can hold (no NUL, valid UTF-8), bounded; None for non-strings."""
    if type(value) is not str or not value:
        return None
    text = value[:limit]
    if text.isascii() and "\x00" not in text:
        return text  # the common case, and nothing to clean
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode()
    return text


def _headers(raw: Sequence[tuple[str, bytes | None]] | None) -> tuple[list[dict[str, str]], str]:
    """The record's headers as stored (`{"k": name, "v": text}`, `"b64"` when not text, no value: `k` alone), and their canonical JSON.

    The JSON is written as each entry is made (keys in sorted order: `b64`, `k`, `v`): `headers_json`'s bytes, one pass.
    """
    out: list[dict[str, str]] = []
    parts: list[str] = []
    for name, value in raw or ():
        k = _clean(name) or ""
        if value is None:
            out.append({"k": k})
            parts.append('{"k":' + _json_str(k) + "}")
            continue
        try:
            text = value.decode()
        except UnicodeDecodeError:
            text = None
        if text is None or "\x00" in text:
            b64 = base64.b64encode(value).decode()
            out.append({"k": k, "b64": b64})
            parts.append('{"b64":' + _json_str(b64) + ',"k":' + _json_str(k) + "}")
        else:
            out.append({"k": k, "v": text})
            parts.append('{"k":' + _json_str(k) + ',"v":' + _json_str(text) + "}")
    return out, "[" + ",".join(parts) + "]"


_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-")


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id (32 hex) of a W3C traceparent, if it has the right shape."""
    match = _TRACEPARENT.match(traceparent) if traceparent else None
    return match.group(1) if match else None


@lru_cache(maxsize=256)
def _adapter(catalog_name: str) -> TypeAdapter[Any]:
    """The contract of a topic; a topic the catalog does not know takes any Tidegate event."""
    try:
        return topic_spec(catalog_name).adapter
    except KeyError:
        return any_event_adapter


def _parse(value: bytes) -> tuple[Any, bool]:
    """`json.loads(value)`, and whether pydantic's JSON parser read it (the same values, in about half the time).

    That parser refuses lone surrogates, a byte-order mark, encodings other than UTF-8 and nesting beyond its limit,
    all of which `json.loads` reads: those values, and those neither reads, get `json.loads`'s answer or error.
    """
    try:
        return from_json(value), True
    except ValueError:
        return json.loads(value), False


def invalid_code(reason: str | None) -> str:
    """A short, bounded code for why a row is not a valid event (`observe`'s reason), for a metric's label.

    `invalid_json`, `invalid_event` (not its topic's contract, or not readable), `tombstone`, a refusal's own code
    (`signature_missing`, `signer_retired`, `too_deep`…), else `other`.
    """
    text = reason or ""
    for start, code in (("no value", "tombstone"), ("not JSON", "invalid_json"), ("invalid event:", "invalid_event")):
        if text.startswith(start):
            return code
    if text.startswith(("not validated:", "fields not readable:")):
        return "invalid_event"
    head = text.split(":", 1)[0]
    return head if head in _REASON_CODES else "other"


_REASON_CODES = frozenset(code.value for code in ReasonCode)


def _validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc or '(event)'}: {err['msg']}")
    return "invalid event: " + "; ".join(parts)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _outcome(event_type: str | None, data: dict[str, Any]) -> str | None:
    for field in ("outcome", "status"):
        if isinstance(data.get(field), str):
            return _clean(data[field], 50)
    if event_type == "tidegate.tool.reply" and isinstance(data.get("ok"), bool):
        return "ok" if data["ok"] else "error"
    return _outcome_of_type(event_type)


@lru_cache(maxsize=512)
def _outcome_of_type(event_type: str | None) -> str | None:
    # The outcome a Tidegate event's type says when its data says none (`tidegate.action.proposed`: `proposed`): cached.
    if event_type and event_type.startswith("tidegate."):
        return _clean(event_type.rsplit(".", 1)[-1], 50)
    return None


_REASONS_OUTSIDE_DATA = frozenset({"tidegate.event.rejected", "tidegate.task.failed"})
"""The event types whose reason codes `_reasons` also reads elsewhere than `data.reasons`."""


def _reasons(event_type: str | None, data: dict[str, Any]) -> list[str]:
    if "reasons" not in data and event_type not in _REASONS_OUTSIDE_DATA:
        return []  # the common case: nothing to read
    codes: list[str] = []
    reasons = data.get("reasons")
    if isinstance(reasons, list):
        codes = [c for r in reasons[:REASON_LIMIT] if isinstance(r, dict) and (c := _clean(r.get("code"), 100))]
    if event_type in ("tidegate.event.rejected",) and (c := _clean(data.get("code"), 100)):
        codes.append(c)
    if event_type == "tidegate.task.failed" and (c := _clean(data.get("reason"), 100)):
        codes.append(c)
    return codes


class SignatureCheck(Protocol):
    """`Authority.check`: None when the event is signed by a key allowed to produce it, else the refusal (code and message)."""

    def __call__(self, raw: bytes, event: Any, document: Any, *, appended_ms: int | None) -> Any:
        """Check `event` (decoded from `raw`, parsed as `document`), a retired key's grace judged at `appended_ms` if given."""


def observe(
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    timestamp_type: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None,
    prefix: str,
    bounds: Bounds = DEFAULT_BOUNDS,
    check: SignatureCheck | None = None,
) -> Observed:
    """Read one Kafka record: keep it raw, check it against its topic's contract, extract its fields.

    Never raises on any input: a value that is not a valid event (too large, too deep, not JSON,
    not the contract) is recorded raw with the reason. With `check` (`Authority.check`, handed the
    value as parsed here, not parsed again), an event whose signature does not verify is recorded as
    invalid, with the refusal's code as the reason (`signature_missing: ...`): recorded all the same.
    The check is handed the broker's append time when the broker stamped the record (`timestamp_type`
    LogAppendTime): an event signed by a key retired longer than the grace before it is `signer_retired`.
    That time is stored (`kafka_ts`, `ts_type`, both hashed), so the verdict can be reached again from the row.
    """
    header_list, header_json = _headers(headers)
    doc: Any = None
    valid, reason, by_pydantic = False, None, False
    if value is None:
        reason = "no value (tombstone)"
    else:
        try:
            check_bounds(value, bounds)  # before any parser: a 100,000-deep array made json.loads raise RecursionError
            doc, by_pydantic = _parse(value)
        except Refused as exc:
            reason = f"{exc.code}: {exc.message}"[:TEXT_LIMIT]
        except Exception as exc:  # ValueError, UnicodeDecodeError, MemoryError: recorded raw, with the reason
            reason = f"not JSON: {exc}"[:TEXT_LIMIT]
        if reason is None:
            try:
                adapter = _adapter(topic.removeprefix(prefix))
                # validated from the value as parsed here, as the kit does (`validate_parsed`), unless only json.loads read it
                event = validate_parsed(adapter, doc, value) if by_pydantic else adapter.validate_json(value)
                appended = broker_time_ms(timestamp_ms, timestamp_type)
                refusal = check(value, event, doc, appended_ms=appended) if check is not None else None
                valid = refusal is None
                if refusal is not None:
                    reason = f"{refusal.code}: {refusal.message}"[:TEXT_LIMIT]
            except ValidationError as exc:
                reason = _validation_error(exc)[:TEXT_LIMIT]
            except Exception as exc:
                reason = f"not validated: {type(exc).__name__}: {exc}"[:TEXT_LIMIT]
    try:
        fields = _fields(doc, header_list)
    except Exception as exc:  # a record is never lost to a bug in reading its fields: kept raw, with the reason
        fields, valid, reason = _no_fields(), False, f"fields not readable: {type(exc).__name__}: {exc}"
    return Observed(
        topic,
        partition,
        offset,
        _kafka_time(timestamp_ms),
        timestamp_type,
        key,
        header_list,
        value,
        valid,
        _clean(reason),
        *fields,
        header_json,
    )


_Fields = tuple[
    str | None, str | None, str | None, str | None, str | None, str | None, str | None, list[str], str | None, str | None, datetime | None
]


def _no_fields() -> _Fields:
    return (None, None, None, None, None, None, None, [], None, None, None)


@lru_cache(maxsize=4096)
def _kafka_time(timestamp_ms: int) -> datetime:
    # Cached: records of a batch share their millisecond more often than not.
    return EPOCH + timedelta(milliseconds=timestamp_ms)


def _fields(doc: Any, header_list: list[dict[str, str]]) -> _Fields:
    """`Observed`'s event fields (event_id … event_time, in order) read from the parsed value."""
    if not isinstance(doc, dict):
        doc = {}  # the trace may still be in the headers
    data: dict[str, Any] = doc["data"] if isinstance(doc.get("data"), dict) else {}
    event_type = _clean(doc.get("type"), 200)
    traceparent = _clean(doc.get("traceparent"), 200) or next(
        (h.get("v") for h in header_list if h["k"] == "traceparent" and "v" in h), None
    )
    return (
        _clean(doc.get("id"), 200),
        event_type,
        _clean(doc.get("tenantid"), 100) or _clean(data.get("tenant_id"), 100),
        _clean(doc.get("subject"), 200) or _clean(data.get("task_id"), 200),
        _clean(data.get("action_id"), 200),
        _clean(data.get("tool"), 100),
        _outcome(event_type, data),
        _reasons(event_type, data),
        trace_id_of(traceparent),
        _clean(traceparent, 200),
        _parse_time(doc.get("time")),
    )
