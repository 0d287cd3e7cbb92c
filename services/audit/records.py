"""What the audit log stores for one Kafka record: `observe` reads its bytes into an `Observed` record.

Pure: a Kafka record goes in, an `Observed` record comes out (raw bytes kept, event fields read when the value
parses, refusals said). The row it becomes in a chain, and the canonical bytes its hash covers, are `rows`'s.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from json.encoder import encode_basestring as _json_str  # what json.dumps(ensure_ascii=False) uses
from typing import Any, Protocol

from pydantic import TypeAdapter, ValidationError
from pydantic_core import from_json

from schemas import ReasonCode, topic_spec, validate_parsed
from schemas.topics import any_event_adapter
from servicekit.authority import broker_time_ms
from servicekit.intake import Bounds, Refused, check_bounds
from services.audit.rows import Fingerprint, Observed, sha256_or_none

__all__ = [
    "SignatureCheck",
    "invalid_code",
    "kafka_fingerprint",
    "observe",
    "trace_id_of",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TEXT_LIMIT = 1000
REASON_LIMIT = 50

DEFAULT_BOUNDS = Bounds()


def kafka_fingerprint(
    *, timestamp_ms: int, timestamp_type: int, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None
) -> Fingerprint:
    """The `Fingerprint` of a Kafka record as read from the bus, without observing its value (`observe` stores these same fields)."""
    return Fingerprint(_kafka_time(timestamp_ms), timestamp_type, sha256_or_none(key), _headers(headers)[1], sha256_or_none(value))


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
