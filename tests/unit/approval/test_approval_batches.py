"""A polled batch at the approval service: every decision and result kept, a human asked only where one is needed, in the event's trace."""

from __future__ import annotations

from test_approval_service_api import ARGS, World, bearer, decided, world  # noqa: F401  (the fixture)

from schemas import ActionDecided, ActionDecidedData, ActionResultData, ActionSucceeded, ActionUnknown, ErrorInfo, UndoPlan

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def event(data: ActionDecidedData, *, traceparent: str | None = None) -> ActionDecided:
    return ActionDecided.build(data, source="tidegate/policy", traceparent=traceparent)


async def test_a_batch_of_decisions_keeps_each_and_asks_a_human_only_for_the_escalation_in_its_trace(world: World) -> None:  # noqa: F811
    escalation = event(decided("a-2"), traceparent=f"00-{TRACE}-00f067aa0ba902b7-01")
    batch = [
        event(decided("a-1", outcome="allow", reasons=[])),
        escalation,
        event(decided("a-3", outcome="deny")),
        event(decided("a-4", via="approval", approval_id="ap-x")),  # the policy's answer to a human: never a new question
    ]
    await world.service.on_decided_batch(batch)

    shown = [(e.action_id, e.outcome) for e in await world.repo.task_events("acme", "t-1")]
    assert sorted(shown) == [("a-1", "allow"), ("a-2", "escalate"), ("a-3", "deny"), ("a-4", "escalate")]
    listed = (await world.client.get("/api/v1/approvals", headers=bearer(world.tokens["bob"]))).json()
    assert [r["action_id"] for r in listed] == ["a-2"]
    request = await world.repo.get_by_action("a-2", tenant_id="acme")
    assert request is not None
    assert request.traceparent is not None
    assert request.traceparent.split("-")[1] == TRACE  # the approver's decision continues the escalation's trace
    assert world.bus.types() == ["tidegate.approval.requested"]

    await world.service.on_decided_batch(batch)  # redelivered: nothing asked twice
    assert world.bus.types() == ["tidegate.approval.requested"]
    assert len(await world.repo.task_events("acme", "t-1")) == 4


async def test_a_batch_of_results_keeps_the_undo_plans_and_opens_a_follow_up_for_an_unknown_outcome(world: World) -> None:  # noqa: F811
    await world.service.on_decided(decided("a-9", outcome="allow", reasons=[]), event_id="e9", at=world.clock())
    ready = UndoPlan(status="ready", tool="untag_ticket", args={"ticket_id": "T-1", "tags": ["refund"]})
    common = {"task_id": "t-1", "tenant_id": "acme", "step": 1, "attempts": 1, "duration_ms": 2}
    tagged = ActionResultData(action_id="a-1", tool="tag_ticket", status="succeeded", undo=ready, **common)  # type: ignore[arg-type]
    lost = ActionResultData(
        action_id="a-9",
        tool="issue_refund",
        status="unknown",
        error=ErrorInfo(type="timeout", message="no answer"),
        **common,  # type: ignore[arg-type]
    )
    await world.service.on_result_batch(
        [ActionSucceeded.build(tagged, source="tidegate/executor"), ActionUnknown.build(lost, source="tidegate/executor")]
    )

    kept = await world.service.undo_results.get("a-1")
    assert kept is not None
    assert kept.result == tagged
    assert await world.service.undo_results.get("a-9") is None
    follow_up = await world.repo.get_by_action("a-9", "follow_up", tenant_id="acme")
    assert follow_up is not None
    assert follow_up.requested_by == "alice@acme.example"  # read from the decision kept before
    assert follow_up.args == ARGS
    assert [e.outcome for e in await world.repo.task_events("acme", "t-1")] == ["allow", "succeeded", "unknown"]
