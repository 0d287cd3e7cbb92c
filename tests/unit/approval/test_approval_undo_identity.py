"""The approval API matches a kept result event to the action asked for by its whole identity (`schemas.action_identity`).

Over the in-memory twin: the kept row is what the service's database login could write. Its copy naming another step
of the task than the executor's signed event is refused, as one naming another action, tenant or task is.
"""

from __future__ import annotations

from typing import Any

from test_approval_service_api import World, bearer, world  # noqa: F401  (the fixture)

import schemas as s
from servicekit.metrics import ROWS_REFUSED
from services.approval._undo_store import InMemoryUndoResults, KeptResult

UNTAG = s.UndoPlan(status="ready", tool="untag_ticket", args={"ticket_id": "T-1", "tags": ["refund"]})


def _succeeded(action_id: str) -> s.ActionSucceeded:
    data = s.ActionResultData(
        action_id=action_id, task_id="t-1", tenant_id="acme", step=1, tool="tag_ticket", status="succeeded",
        result={}, attempts=1, duration_ms=1.0, undo=UNTAG,
    )  # fmt: skip
    return s.ActionSucceeded.build(data, source="tidegate/executor")


async def _undo(world: World, action_id: str) -> Any:  # noqa: F811
    return await world.client.post(f"/api/v1/actions/{action_id}/undo", headers=bearer(world.tokens["bob"]))


async def test_a_row_whose_copy_names_another_step_than_its_signed_event_is_refused(world: World) -> None:  # noqa: F811
    await world.receive(_succeeded("a-1"))
    kept = world.service.undo_results
    assert isinstance(kept, InMemoryUndoResults)
    row = kept.results["a-1"]
    kept.results["a-1"] = KeptResult(row.result.model_copy(update={"step": 2}), row.event)
    before = ROWS_REFUSED.labels("approval", "undo_results", "invalid")._value.get()

    answer = await _undo(world, "a-1")

    assert (answer.status_code, answer.json()["detail"]["code"]) == (422, "undo_irreversible"), answer.text
    said = "the executor's signed result of another action (a-1, tenant acme, task t-1, step 1)"
    assert said in answer.json()["detail"]["message"]
    assert ROWS_REFUSED.labels("approval", "undo_results", "invalid")._value.get() == before + 1
    assert not [e for _, e in world.bus.events if e.type == "tidegate.action.proposed"]
