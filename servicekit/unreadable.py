"""Reading whatever the record holds: an event, or the reason it is skipped.

The tools that read the record (replay, what-if, costs, explain, the approver page) meet every
event ever written, including those no service accepted: invalid JSON, a wrong shape, an unknown
type, NaN or Infinity, values too large or too deep. `read_event` turns each into a typed event or
an `Unreadable` with a stable reason code; `Skipped` counts them so a report can say
"skipped 3: invalid_event 2, nan 1" and go on with the rest. The bounds and the NaN screen are the
consumers' own (`servicekit.intake.check_bounds`), so a reader skips exactly what a service refuses.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pydantic import ValidationError

from schemas import decode, decode_any, is_finite_json
from servicekit.intake import Bounds, Refused, check_bounds

__all__ = ["MAX_EVENT_BYTES", "SkipReason", "Skipped", "Unreadable", "has_non_finite", "read_event", "skip_reason"]

SkipReason = Literal["invalid_json", "invalid_event", "unknown_type", "nan", "too_large", "too_deep", "not_decidable"]

MAX_EVENT_BYTES: Final = 1_048_576
"""Larger than any record the broker accepts by default (`message.max.bytes` ~1 MiB): such a value is skipped unread."""


_TYPE_ERRORS = frozenset({"union_tag_invalid", "literal_error"})


class Unreadable(ValueError):
    """A recorded value that is not an event a tool can use, with the reason code and a short detail."""

    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: SkipReason = reason
        self.detail = detail


def _reason_of(exc: ValidationError) -> Unreadable:
    errors = exc.errors(include_input=False, include_url=False)
    if not errors:
        return Unreadable("invalid_event", str(exc)[:200])
    first = errors[0]
    if first["type"] == "json_invalid":
        message = str((first.get("ctx") or {}).get("error", first["msg"]))
        return Unreadable("too_deep" if "recursion" in message else "invalid_json", message[:200])
    if any(e["type"] == "finite_number" for e in errors):
        return Unreadable("nan", "a number is NaN, infinite or beyond a double")
    if any(e["type"] in _TYPE_ERRORS and e["loc"][:1] in ((), ("type",)) for e in errors):
        return Unreadable("unknown_type", "the event type is not one this topic carries")
    where = ".".join(str(p) for p in first.get("loc", ()))
    return Unreadable("invalid_event", f"{len(errors)} error(s), first at {where or 'the top'}: {first['msg']}"[:200])


# What a reader calls each of the consumers' refusals.
_SKIP_OF: dict[str, SkipReason] = {"too_large": "too_large", "too_deep": "too_deep", "not_finite": "nan"}
_READER_BOUNDS = Bounds(max_bytes=MAX_EVENT_BYTES)


def read_event(topic: str | None, raw: bytes | str | None) -> Any:
    """The typed event of one recorded value of catalog topic `topic` (None: any event type); raises `Unreadable`.

    The consumers' bounds come first (size, depth, NaN/Infinity as bare tokens: the contract refuses
    a non-finite number anywhere else, `1e999` in a call's args included); money and counts computed
    from them would be meaningless.
    """
    if raw is None:
        raise Unreadable("invalid_event", "the record has no value")
    data = raw.encode() if isinstance(raw, str) else raw
    try:
        check_bounds(data, _READER_BOUNDS)
    except Refused as exc:
        raise Unreadable(_SKIP_OF.get(exc.code, "invalid_event"), exc.message) from None
    try:
        return decode(topic, data) if topic is not None else decode_any(data)
    except ValidationError as exc:
        raise _reason_of(exc) from None
    except RecursionError:
        raise Unreadable("too_deep", "nested deeper than the parser allows") from None


def has_non_finite(value: Any) -> bool:
    """Whether a decoded value (or one number) holds a NaN, an infinity or an integer beyond a double anywhere."""
    return not is_finite_json(value)


_NOT_FINITE = re.compile(r"\bnan\b|finite|infinit", re.IGNORECASE)


def skip_reason(exc: BaseException) -> SkipReason:
    """The reason code of an error met while using an event that did read (e.g. a decision that cannot be computed)."""
    if isinstance(exc, Unreadable):
        return exc.reason
    if _NOT_FINITE.search(str(exc)):  # the word NaN, or (in)finite: not the letters in "tenant" or "maintenance"
        return "nan"
    return "not_decidable"


@dataclass
class Skipped:
    """Events skipped by a tool, counted by reason, with the first few examples (where they were, why)."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    max_examples: int = 5

    def add(self, reason: str, where: str = "", detail: str = "") -> None:
        """Count one skipped event."""
        self.counts[reason] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(f"{where} {reason}: {detail}".strip())

    def merge(self, other: Skipped) -> None:
        """Add another tool stage's skips to these."""
        self.counts.update(other.counts)
        self.examples.extend(other.examples[: max(0, self.max_examples - len(self.examples))])

    @property
    def total(self) -> int:
        """How many events were skipped."""
        return sum(self.counts.values())

    def summary(self) -> str:
        """`skipped 3: invalid_event 2, nan 1` (most frequent first), or `skipped 0`."""
        if not self.counts:
            return "skipped 0"
        parts = ", ".join(f"{reason} {n}" for reason, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])))
        return f"skipped {self.total}: {parts}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counts and examples."""
        return {"total": self.total, "by_reason": dict(sorted(self.counts.items())), "examples": list(self.examples)}
