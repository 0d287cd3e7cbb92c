"""An action's one outcome: recorded with its signed result event in one statement, then that event published.

A redelivered or replayed authorization is answered with the event kept (`kept_results`: the same id, not a
second result that consumers summing costs would count again), never with one signed anew.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from schemas import (
    ActionFailed,
    ActionResultData,
    ActionSucceeded,
    ActionUnknown,
    Envelope,
    ReasonCode,
    ResultCost,
    ToolSpec,
    UndoPlan,
    action_identity,
    storable,
)
from servicekit import Outlet, Recorded, current_traceparent
from servicekit.costs import call_cost_usd
from services.executor.claims import ClaimSession
from services.executor.domain import CallError, ClaimRecord
from services.executor.results import bounded_error, result_stand_in, undo_stand_in

__all__ = ["SOURCE", "call_error", "outcome", "settle", "with_result"]

log = logging.getLogger(__name__)

SOURCE = "tidegate/executor"
_RESULT_EVENTS: dict[str, type[Envelope]] = {"succeeded": ActionSucceeded, "failed": ActionFailed, "unknown": ActionUnknown}


def call_error(type_: str, message: str, *, retryable: bool = False, dead: ReasonCode | None = None) -> CallError:
    """An error as kept and published; its text may come from outside (a tool's message, an exception), so `storable`."""
    return CallError(storable(str(type_)), storable(message), retryable, dead)


def outcome(
    record: ClaimRecord,
    spec: ToolSpec,
    status: Any,
    result: dict[str, Any] | None,
    error: CallError | None,
    attempts: int,
    started: float,
    extra_cost: float,
) -> ClaimRecord:
    """`record` ended as `status` after `attempts`, made since `started` (`time.monotonic`); `extra_cost`: what tools reported."""
    return replace(
        record,
        status=status,
        result=result,
        error=error,
        attempts=attempts,
        duration_ms=record.duration_ms + (time.monotonic() - started) * 1000,
        cost_usd=call_cost_usd(spec.cost_usd, attempts, extra_cost),
    )


async def settle(session: ClaimSession, done: ClaimRecord, out: Outlet, bound: int, undo: UndoPlan | None = None) -> ClaimRecord:
    """Record the outcome `done` and its result event (signed, within `bound` bytes) in one statement, then publish that event on `out`."""
    done, made = with_result(done, out, bound, undo)
    done = await session.finish(done)
    await out.publish_many([made])
    return done


def with_result(done: ClaimRecord, out: Outlet, bound: int, undo: UndoPlan | None = None) -> tuple[ClaimRecord, Recorded]:
    """The outcome `done` with its result event (signed, within `bound` bytes) to keep, and that event to publish once kept."""
    made = _recorded_result(done, out, bound, undo)
    return replace(done, result_event=made.value.decode()), made


def _recorded_result(record: ClaimRecord, out: Outlet, bound: int, undo: UndoPlan | None) -> Recorded:
    """The result event of `record`, signed and encoded: its whole result only while it fits `bound` (`max_result_bytes`).

    Else the result, then the undo plan, give way to stand-ins that say where the whole is kept: a
    record the producer refuses (over ~1 MiB) was never published, and the planner waited for it forever.
    """
    made = out.record("actions.results", _result_event(record, undo))
    if len(made.value) <= bound:
        return made
    log.warning(
        "action %s: its result event is %d bytes, over %d: the result goes out as a stand-in", record.action_id, len(made.value), bound
    )
    if record.result is not None:
        record = replace(record, result=result_stand_in(record.result, bound))
        made = out.record("actions.results", _result_event(record, undo))
    if len(made.value) > bound and undo is not None:
        undo = undo_stand_in(undo, len(undo.model_dump_json()), bound)
        made = out.record("actions.results", _result_event(record, undo))
    return made


def _result_event(record: ClaimRecord, undo: UndoPlan | None) -> Envelope:
    kept = record.error
    # an `unknown` outcome is one that may have happened, whatever the last attempt's error said of itself
    maybe_applied = kept is not None and (kept.maybe_applied or record.status == "unknown")
    error = None if kept is None else bounded_error(kept.type, kept.message, kept.retryable, maybe_applied)
    data = ActionResultData(
        **action_identity(record),
        tool=record.tool,
        status=record.status,  # type: ignore[arg-type]  # terminal here
        result=record.result,
        error=error,
        attempts=record.attempts,
        duration_ms=max(record.duration_ms, 0.0),
        cost=ResultCost(usd=record.cost_usd),
        idempotency_key=record.action_id,
        undo=undo,
    )
    # The trace context is part of the kept event: a re-sent result points at the call's own span.
    return _RESULT_EVENTS[record.status].build(data, source=SOURCE, traceparent=current_traceparent())
