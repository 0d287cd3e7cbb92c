"""A row of the audit log and the canonical bytes its hash covers: the columns, the chain's links, a record's fingerprint.

Pure: `Observed` (what `records.observe` made of a Kafka record) becomes a `LogRow` at its place in a chain. Every
stored column is in the hash, so no column can be changed without breaking the chain.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from json.encoder import encode_basestring as _json_str  # what json.dumps(ensure_ascii=False) uses
from typing import Any, NamedTuple

from schemas import canonical_json

__all__ = [
    "CHAIN_COLUMNS",
    "COLUMNS",
    "GENESIS",
    "Fingerprint",
    "LogRow",
    "Observed",
    "chain_hash",
    "content_bytes",
    "headers_json",
    "linked",
    "reference_content_bytes",
    "row_content",
    "sha256_or_none",
]

GENESIS = b"\x00" * 32
"""`prev_hash` of the first row of every chain."""


class Observed(NamedTuple):
    """One Kafka record as the audit sees it, before it has a place in a chain.

    A `LogRow`'s columns but those of its place (`CHAIN_COLUMNS`), in table order, then `headers_json`: checked below.
    """

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
    """One row of `audit.log`: an observed record with its chain position and hashes; its fields are the table's columns."""

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


COLUMNS: tuple[str, ...] = LogRow._fields
"""Columns of `audit.log`, in table order; all but the last (`hash`) are hashed, in this order."""

CHAIN_COLUMNS = ("seq", "duplicate", "recorded_at", "prev_hash", "hash")
"""The columns of a row's place in its chain: what `linked` adds to an `Observed` record."""

_SEQ_AT = COLUMNS.index("seq")  # an Observed record's values go around `seq`: `*obs[:_SEQ_AT], seq, *obs[_SEQ_AT:_OBSERVED]`
_OBSERVED = len(COLUMNS) - len(CHAIN_COLUMNS)
if Observed._fields != (*(c for c in COLUMNS if c not in CHAIN_COLUMNS), "headers_json") or COLUMNS[_OBSERVED + 1 :] != CHAIN_COLUMNS[1:]:
    raise TypeError("Observed's fields must be LogRow's but CHAIN_COLUMNS, in order, then headers_json (`linked` places them so)")


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
        return cls(record.kafka_ts, record.ts_type, sha256_or_none(record.key), headers, sha256_or_none(record.value))

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


def sha256_or_none(raw: bytes | None) -> bytes | None:
    """The SHA-256 of `raw` (a key or value as Kafka carried it); None for none."""
    return None if raw is None else hashlib.sha256(raw).digest()


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
    """Canonical JSON of a row's `headers` (what the hash covers and the jsonb column is given).

    Any JSON the column holds: a row written into the database may hold a number or `null` there (its hash, and the
    fingerprint a redelivery is compared with, are then of that; one such row stopped the audit service for good).
    """
    if type(value) is not list:
        return canonical_json(value).decode()
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
    return _new_row(LogRow, (*obs[:_SEQ_AT], seq, *obs[_SEQ_AT:_OBSERVED], duplicate, recorded_at, prev_hash, digest))


_new_row = tuple.__new__


def reference_content_bytes(values: Sequence[Any]) -> bytes:
    """`content_bytes` by the generic reference encoding (slow; for tests and audits of the format)."""
    return b"".join(_field(v) for v in values)


def chain_hash(prev_hash: bytes, content: bytes) -> bytes:
    """SHA-256 of the previous row's hash followed by this row's canonical content."""
    return hashlib.sha256(prev_hash + content).digest()
