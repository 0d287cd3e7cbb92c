"""The order `tidegate db catch-up` hands the planner its events again after a restore (`services/planner/restored.py`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas import ApprovalGranted, Envelope, TaskSubmitted
from servicekit.bus_history import SignedEvent
from services.planner import restored

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


def _event(at: datetime = T0) -> Envelope:
    # Only its `time` is read, when the broker did not stamp the record.
    return TaskSubmitted.model_construct(time=at)


def _at(name: str, appended_ms: int | None, *, partition: int = 0, offset: int = 0, event: Any = None) -> tuple[str, SignedEvent]:
    return (name, SignedEvent(event or _event(), "{}", f"dep.{name}", partition, offset, appended_ms))


def test_events_of_the_four_topics_are_handed_in_the_order_the_broker_appended_them_not_topic_by_topic() -> None:
    result_step_3 = _at("actions.results", T0_MS + 10, offset=3)
    escalated = _at("actions.decided", T0_MS + 20, offset=4)
    granted = _at("approvals", T0_MS + 30, offset=0, event=ApprovalGranted.model_construct(time=T0))
    decided_again = _at("actions.decided", T0_MS + 40, offset=5)
    result_step_4 = _at("actions.results", T0_MS + 50, offset=4)
    read = [granted, decided_again, escalated, result_step_4, result_step_3]  # topic by topic, as they were read
    assert restored.in_order(read) == [result_step_3, escalated, granted, decided_again, result_step_4]


def test_within_a_millisecond_the_topics_go_as_the_planner_lists_them_then_partition_and_offset() -> None:
    later = _at("tasks", T0_MS, partition=1, offset=0)
    first = _at("tasks", T0_MS, partition=0, offset=7)
    result = _at("actions.results", T0_MS, offset=0)
    assert restored.in_order([result, later, first]) == [first, later, result]


def test_a_record_the_broker_did_not_stamp_is_placed_by_its_own_time() -> None:
    unstamped = _at("approvals", None, event=_event(datetime.fromtimestamp((T0_MS + 15) / 1000, UTC)))
    before, after = _at("actions.results", T0_MS + 10), _at("actions.results", T0_MS + 20, offset=1)
    assert restored.in_order([after, unstamped, before]) == [before, unstamped, after]


def test_the_topics_handed_again_are_every_topic_the_planner_may_read() -> None:
    from servicekit.bus_rights import rights_of

    assert set(restored.READS) == set(rights_of("planner").reads)
