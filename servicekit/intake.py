"""What every consume path does to a record before a handler sees it, and how it tells errors apart.

Bounds are checked on the raw bytes BEFORE any JSON parser runs (a 100,000-deep array made the
standard library's parser raise `RecursionError`); NaN and Infinity are refused here too, since
pydantic accepts them in untyped fields. `describe_raw` is what a dead letter keeps of a value it
may not be able to parse: a truncated text, the full size and a SHA-256 of the whole value.
`classify` is the one place that decides whether an exception is transient (retry, never
dead-letter), a dead producer (rebuild or exit), or about the record itself (dead-letter).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

import asyncpg
from aiokafka.errors import (
    IllegalStateError,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
)

from schemas import ReasonCode
from servicekit.refusals import REFUSED_FOR_GOOD

__all__ = [
    "Bounds",
    "ErrorKind",
    "ProducerDead",
    "RawValue",
    "Refused",
    "check_bounds",
    "classify",
    "describe_raw",
    "named_mismatch",
    "named_tenant_and_task",
    "named_tenant_and_task_of",
    "text_of",
]

RAW_LIMIT = 64 * 1024

# A JSON string (unrolled: no alternation per character), removed before looking at brackets and
# numbers, so that brackets, "NaN" and "1e999" inside a string stay text.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# A number with a 3-digit exponent (looked for outside strings only: a UUID holds "3e417").
_BIG_EXPONENT = re.compile(rb"-?\d+(?:\.\d+)?[eE][+-]?\d{3,}")
_OPEN = frozenset(b"[{")


@dataclass(frozen=True)
class Bounds:
    """Limits on one record's value, checked before parsing (settings: `TIDEGATE_MAX_VALUE_BYTES`, `TIDEGATE_MAX_JSON_DEPTH`)."""

    max_bytes: int = 1024 * 1024
    max_depth: int = 64


class Refused(Exception):
    """A record that cannot be accepted whatever happens around it; dead-lettered with `code`."""

    def __init__(self, code: ReasonCode | str, message: str) -> None:
        super().__init__(message)
        self.code = str(code)
        self.message = message


class ProducerDead(Exception):
    """The producer can no longer deliver (fatal idempotence error, dead sender task): rebuild it or exit."""


def check_bounds(value: bytes | None, bounds: Bounds) -> None:
    """Raise `Refused` when `value` is too large, nested too deep, or holds NaN/Infinity; cheap when it does not.

    The common case costs two `bytes.count` and two substring tests (about 2 µs on 500 bytes); the
    exact scan (strings removed, brackets counted, numbers checked) runs only when the value has more
    opening brackets than the depth allows or holds the text "NaN" or "Infinity". A number that
    overflows a double (`1e999`) is found by that scan, or else by the contract wherever it types a
    number (`allow_inf_nan=False`): looking for exponents in every value would cost more than decoding it.
    """
    if value is None:
        return
    size = len(value)
    if size > bounds.max_bytes:
        raise Refused(ReasonCode.TOO_LARGE, f"value of {size} bytes exceeds the bound of {bounds.max_bytes}")
    deep = value.count(b"[") + value.count(b"{") > bounds.max_depth
    # `find`, not `in`: CPython 3.11's `bytes in bytes` first tries the needle as an integer and raises and clears a
    # TypeError inside, about twice the cost of the scan itself on an event (tests/unit/foundation/test_bytes_search.py)
    odd = value.find(b"NaN") != -1 or value.find(b"Infinity") != -1
    if deep or odd:
        _scan(value, bounds.max_depth)


def _outside_strings(value: bytes) -> bytes:
    """`value` with the text of its JSON strings removed (C-speed `split` unless a string escapes a quote)."""
    if b'\\"' in value:
        return _STRING.sub(b'""', value)
    return b"".join(value.split(b'"')[::2])


def _scan(value: bytes, max_depth: int) -> None:
    bare = _outside_strings(value)
    depth = 0
    for char in bare.translate(None, _NOT_BRACKETS):
        depth += 1 if char in _OPEN else -1
        if depth > max_depth:
            raise Refused(ReasonCode.TOO_DEEP, f"JSON nested deeper than {max_depth}")
    if b"NaN" in bare or b"Infinity" in bare:
        raise Refused(ReasonCode.NOT_FINITE, "non-finite number (NaN and Infinity are not JSON)")
    words = bare.replace(b"true", b"").replace(b"false", b"")
    if b"e" not in words and b"E" not in words:  # no exponent anywhere: no number can overflow
        return
    for number in _BIG_EXPONENT.finditer(bare):
        if not math.isfinite(float(number.group())):
            raise Refused(ReasonCode.NOT_FINITE, f"number {number.group()[:40].decode()!r} is not finite as a double")


@dataclass(frozen=True)
class RawValue:
    """What a dead letter keeps of a value: its text (truncated), its full size, its SHA-256."""

    text: str
    size: int
    sha256: str
    truncated: bool


def text_of(raw: bytes) -> str:
    """`raw` as text an event may carry: UTF-8, with what is not UTF-8 and U+0000 (which the contract refuses) as U+FFFD."""
    return raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def named_tenant_and_task(doc: Any) -> tuple[str | None, str | None]:
    """The tenant and task a record's parsed value names, as a dead letter carries them (None: it names none).

    The envelope's `tenantid` and `subject`, else its data's `tenant_id` and `task_id`; cut to 100 and 200 characters,
    a lone surrogate (which `json.loads` lets through) as `?`, U+0000 as U+FFFD: a dead letter must always build. One
    reading for the dead-letterer and for the check that holds a dead letter to the record it carries.
    """
    if not isinstance(doc, dict):
        return None, None
    data: dict[str, Any] = doc["data"] if isinstance(doc.get("data"), dict) else {}
    tenant = doc.get("tenantid") or data.get("tenant_id")
    task = doc.get("subject") or data.get("task_id")
    return _carried(tenant, 100), _carried(task, 200)


def named_tenant_and_task_of(raw: bytes | str) -> tuple[str | None, str | None]:
    """`named_tenant_and_task` of a record's raw value (None, None: not JSON the dead-letterer could read)."""
    try:
        return named_tenant_and_task(json.loads(raw))
    except Exception:  # RecursionError, anything: a value it could not read names nothing
        return None, None


def named_mismatch(named: tuple[str | None, str | None], record: tuple[str | None, str | None]) -> tuple[str, str, str | None] | None:
    """What a dead letter naming `named` (tenant, task) names that a record naming `record` is not; None: it may be its.

    Said as (`tenant` or `task`, the dead letter's, the record's). A dead letter names what its dead-letterer read of the
    record (`named_tenant_and_task`), `unknown` and no task when it read none (a value over its bounds, or not JSON):
    those always pass. One that names a tenant or a task must name the record's: a record that names none is no task's,
    and its refusal is told in no task's story (review64).
    """
    tenant, task = named
    if tenant not in (None, "unknown") and tenant != record[0]:
        return "tenant", tenant, record[0]
    if task is not None and task != record[1]:
        return "task", task, record[1]
    return None


def _carried(value: Any, limit: int) -> str | None:
    """`value` as a dead letter carries it (`named_tenant_and_task`); None for none."""
    return text_of(str(value)[:limit].encode("utf-8", "replace")) if value else None


def describe_raw(value: bytes | None, limit: int = RAW_LIMIT) -> RawValue:
    """Describe `value` without parsing it; never raises on any bytes."""
    raw = value or b""
    return RawValue(
        text=text_of(raw[:limit]),  # `size` and `sha256` are of the exact bytes
        size=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(),
        truncated=len(raw) > limit,
    )


class ErrorKind(Enum):
    """What to do about an exception raised while handling a record."""

    TRANSIENT = "transient"  # the infrastructure: retry with backoff, never dead-letter
    PRODUCER_DEAD = "producer_dead"  # the producer cannot deliver again: rebuild it, or exit
    RECORD = "record"  # the record itself: dead-letter it, go on


_PRODUCER_FATAL: tuple[type[BaseException], ...] = (
    ProducerDead,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    IllegalStateError,
)

# The database is down, refuses this service, or lacks what it needs: its environment's failure, never the record's, so a
# record that meets one is retried (and the pool's connections expired, `servicekit.db.discard_broken_connections`), never
# dead-lettered. Whole SQLSTATE classes, so that a code PostgreSQL adds to one is covered too. The approval API answers 503.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # class 08, incl. ConnectionDoesNotExistError
    asyncpg.InterfaceError,  # "connection is closed", "another operation is in progress"
    asyncpg.InternalClientError,  # "cannot switch to state 12/15" on a pooled connection broken by a shutdown
    asyncpg.InvalidAuthorizationSpecificationError,  # class 28: a refused login (a password rotated before the restart, NOLOGIN)
    asyncpg.InsufficientResourcesError,  # class 53: too many connections (for the server or the role), disk full, out of memory
    # class 55: the database is not accepting connections (`ALTER DATABASE … ALLOW_CONNECTIONS false`, 55000, during a
    # restore or maintenance), a lock not available within `lock_timeout` (55P03), an object in use (55006)
    asyncpg.ObjectNotInPrerequisiteStateError,
    asyncpg.OperatorInterventionError,  # class 57: admin or crash shutdown, cannot connect now, query cancelled, database dropped
    asyncpg.PostgresSystemError,  # class 58: I/O error
    asyncpg.ReadOnlySQLTransactionError,  # 25006: a failover onto a standby, `default_transaction_read_only` during maintenance
    asyncpg.DataCorruptedError,  # XX001 and XX002: the storage's, until repaired (REINDEX, a restore)
    asyncpg.IndexCorruptedError,
)

# A transaction PostgreSQL rolled back for the sake of a concurrent one: run again, it passes.
_CONFLICTS: tuple[type[BaseException], ...] = (
    asyncpg.SerializationError,  # 40001
    asyncpg.DeadlockDetectedError,  # 40P01
)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, asyncio.TimeoutError, KafkaError, *DATABASE_ERRORS, *_CONFLICTS)

# Kafka errors about the record itself (`servicekit.refusals`): too large for the producer's `max_request_size` (raised at
# send) or the topic's `max.message.bytes`, invalid, corrupt, refused by a policy. Sent again it is refused again: retried,
# it would stall its partition for ever.
_RECORD_REFUSED_BY_KAFKA = REFUSED_FOR_GOOD


def classify(exc: BaseException) -> ErrorKind:
    """Transient, dead producer, or about the record (the default: only that is dead-lettered)."""
    if isinstance(exc, _PRODUCER_FATAL):
        return ErrorKind.PRODUCER_DEAD
    if isinstance(exc, _RECORD_REFUSED_BY_KAFKA):
        return ErrorKind.RECORD
    if isinstance(exc, TRANSIENT_ERRORS):
        return ErrorKind.TRANSIENT
    return ErrorKind.RECORD
