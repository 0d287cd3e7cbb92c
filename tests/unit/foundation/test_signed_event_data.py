"""A verified event read back from a topic gives its data as the topic's data class, typed, or says it is not one."""

from __future__ import annotations

import pytest

from schemas import ActionResultData, ActionSucceeded, ApprovalData, ResultCost
from servicekit.bus_history import SignedEvent


def _result() -> SignedEvent:
    data = ActionResultData(
        action_id="a-1", task_id="t-1", tenant_id="acme", tool="lookup_order", status="succeeded", attempts=1, duration_ms=3.0,
        cost=ResultCost(usd=0.001),
    )  # fmt: skip
    event = ActionSucceeded.build(data, source="tidegate/executor")
    return SignedEvent(event=event, text="{}", topic="tidegate.actions.results", partition=2, offset=41, appended_ms=None)


def test_the_data_of_its_topic_comes_back_as_it_is() -> None:
    signed = _result()
    assert signed.data(ActionResultData) is signed.event.data
    assert signed.data(ActionResultData).action_id == "a-1"


def test_asking_for_another_topics_data_names_the_record() -> None:
    with pytest.raises(TypeError, match=r"tidegate\.actions\.results\[2\]@41: tidegate\.action\.succeeded carries no ApprovalData"):
        _result().data(ApprovalData)
