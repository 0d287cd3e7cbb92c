"""Reading whatever the record holds: an event, or the reason it is skipped.

The tools that read the record (replay, what-if, costs, explain, the approver page) meet every
event ever written, including those no service accepted: invalid JSON, a wrong shape, an unknown
type, NaN or Infinity, values too large or too deep. `read_event` turns each into a typed event or
an `Unreadable` with a stable reason code; `Skipped` counts them so a report can say
"skipped 3: invalid_event 2, nan 1" and go on with the rest.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pydantic import ValidationError

from schemas import decode, decode_any

__all__ = ["MAX_EVENT_BYTES", "SkipReason", "Skipped", "Unreadable", "has_non_finite", "read_event", "skip_reason"]

SkipReason = Literal["invalid_json", "invalid_event", "unknown_type", "nan", "too_large", "too_deep", "not_decidable"]

MAX_EVENT_BYTES: Final = 1_048_576
"""Larger than any record the broker accepts by default (`message.max.bytes` ~1 MiB): such a value is skipped unread."""


def _suspect(data: bytes) -> bool:
    """Whether the value may hold a NaN or an Infinity: two substring scans (replay reads a day of traffic).

    A string that spells one only costs a second parse that finds nothing. A number too large to be
    finite (`1e999`) is not screened here: a scan of every number cost as much as the decode itself
    (measured); it reads as an infinite float, and `read_event` refuses one in an event's `args`.
    """
    return b"NaN" in data or b"Infinity" in data


_TYPE_ERRORS = frozenset({"union_tag_invalid", "literal_error"})


class Unreadable(ValueError):
    """A recorded value that is not an event a tool can use, with the reason code and a short detail."""

    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: SkipReason = reason
        self.detail = detail


def _reject_constant(name: str) -> Any:
    raise Unreadable("nan", f"the value holds {name}, which JSON does not allow")


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


def read_event(topic: str | None, raw: bytes | str | None) -> Any:
    """The typed event of one recorded value of catalog topic `topic` (None: any event type); raises `Unreadable`.

    NaN and Infinity are refused although the JSON parser accepts them: money and counts computed
    from them would be meaningless (and the policy engine refuses them); so is a number too large
    to be finite in a call's args. Costs about twice a plain decode only for a value that spells one.
    """
    if raw is None:
        raise Unreadable("invalid_event", "the record has no value")
    data = raw.encode() if isinstance(raw, str) else raw
    if len(data) > MAX_EVENT_BYTES:
        raise Unreadable("too_large", f"{len(data)} bytes, more than {MAX_EVENT_BYTES}")
    try:
        event = decode(topic, data) if topic is not None else decode_any(data)
    except ValidationError as exc:
        reason = _reason_of(exc)
        if reason.reason == "invalid_event" and _suspect(data):
            _screen(data)  # a NaN that broke a bound (`ge=0`) is a NaN first
        raise reason from None
    except RecursionError:
        raise Unreadable("too_deep", "nested deeper than the parser allows") from None
    # Cheap screen first (replay reads a day of traffic): only a value that spells them is parsed again.
    if _suspect(data):
        _screen(data)
    args = getattr(getattr(event, "data", None), "args", None)
    if args and _args_non_finite(args):  # `1e999` in a call's args: no digest, no amount can be computed from it
        raise Unreadable("nan", "the call's args hold a number too large to be finite")
    return event


def _screen(data: bytes) -> None:
    try:
        json.loads(data, parse_constant=_reject_constant)
    except RecursionError:
        raise Unreadable("too_deep", "nested deeper than the parser allows") from None
    except ValueError as exc:
        if isinstance(exc, Unreadable):
            raise
        raise Unreadable("invalid_json", str(exc)[:200]) from None


def has_non_finite(value: Any) -> bool:
    """Whether a decoded value holds a NaN or an infinite float anywhere (loops, no generators: it runs per event)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is float:
            if item - item != 0.0:  # NaN - NaN and inf - inf are NaN; a finite float gives 0.0
                return True
        elif kind is dict:
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
    return False


def _args_non_finite(args: dict[str, Any]) -> bool:
    """`has_non_finite` for a call's args, without building a stack for the usual flat ones."""
    for item in args.values():
        kind = type(item)
        if kind is float:
            if item - item != 0.0:
                return True
        elif (kind is dict or kind is list) and has_non_finite(item):
            return True
    return False


def skip_reason(exc: BaseException) -> SkipReason:
    """The reason code of an error met while using an event that did read (e.g. a decision that cannot be computed)."""
    if isinstance(exc, Unreadable):
        return exc.reason
    if "finite" in str(exc).lower() or "nan" in str(exc).lower():
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
