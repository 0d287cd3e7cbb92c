"""What a result event carries of a call, kept within a size the bus and its consumers take (pure; `outcomes.py` applies it).

The claim row (`executor.actions`) keeps the whole result; the event carries it only when the whole
event fits `TIDEGATE_EXECUTOR_MAX_RESULT_BYTES`. Otherwise a stand-in says so plainly: how large the
result is, its SHA-256, its first characters, and where the whole is kept. Without it, a result over
the producer's 1 MiB limit was never published and the planner waited for it forever.
"""

from __future__ import annotations

import hashlib
from typing import Any

from schemas import ErrorInfo, UndoPlan, canonical_json

__all__ = ["ERROR_MESSAGE_CHARS", "ERROR_TYPE_CHARS", "PREVIEW_CHARS", "bounded_error", "result_stand_in", "undo_stand_in"]

PREVIEW_CHARS = 1000  # of the result's canonical JSON, in a stand-in
ERROR_MESSAGE_CHARS = 4000  # as much as a dead letter keeps of an error
ERROR_TYPE_CHARS = 200


def result_stand_in(result: dict[str, Any], bound: int) -> dict[str, Any]:
    """What a result event carries instead of `result`, which made it larger than `bound` bytes.

    `bytes` and `sha256` are of the result's canonical JSON (`schemas.canonical_json`: sorted keys, no
    whitespace), and `preview` is its first `PREVIEW_CHARS` characters; the whole is the claim row's `result`.
    """
    text = canonical_json(result)
    return {
        "truncated": True,
        "bytes": len(text),
        "sha256": hashlib.sha256(text).hexdigest(),
        "preview": text.decode()[:PREVIEW_CHARS],
        "kept_in": "executor.actions",
        "message": f"the result ({len(text)} bytes) makes its event larger than {bound} bytes; "
        "the whole is kept in executor.actions (column result) under this action id",
    }


def undo_stand_in(plan: UndoPlan, size: int, bound: int) -> UndoPlan:
    """What a result event carries instead of undo `plan` (`size` bytes of JSON) when the event is still larger than `bound`."""
    return UndoPlan(
        status="unavailable",
        tool=plan.tool,
        message=f"the undo plan ({plan.status}, {size} bytes) makes the result event larger than {bound} bytes; "
        "it is kept whole in executor.undo_plans under this action id",
    )


def bounded_error(type_: str, message: str, retryable: bool, maybe_applied: bool = False) -> ErrorInfo:
    """An error as a result event carries it: its type and message cut to a bound (the claim row keeps them whole)."""
    if len(message) > ERROR_MESSAGE_CHARS:
        message = f"{message[:ERROR_MESSAGE_CHARS]}… ({len(message)} characters in all; the whole is kept in executor.actions)"
    return ErrorInfo(type=type_[:ERROR_TYPE_CHARS], message=message, retryable=retryable, maybe_applied=maybe_applied)
