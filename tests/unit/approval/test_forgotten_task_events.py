"""What the approval service saw of a task is the context an approver reads beside a request, kept a month, not forever."""

from __future__ import annotations

from datetime import timedelta

from test_approval_service_api import World, bearer, decided, world  # noqa: F401  (the fixture)

from services.approval._task_event_store import forget_task_events


async def test_events_older_than_the_cutoff_are_forgotten_in_batches_and_a_requests_context_keeps_the_rest(world: World) -> None:  # noqa: F811
    now = world.clock()
    for i in range(3):  # an old task's decisions, forty days ago
        await world.service.on_decided(
            decided(f"old-{i}", outcome="allow", reasons=[], task_id="t-old"), event_id=f"o{i}", at=now - timedelta(days=40)
        )
    await world.service.on_decided(decided("a-0", outcome="allow", reasons=[]), event_id="e0", at=now - timedelta(days=29))
    record = await world.service.on_decided(decided("a-1"), event_id="e1", at=now)
    assert record is not None

    assert await forget_task_events(world.repo, now - timedelta(days=30), batch=2) == 3  # two rounds, the second not full
    assert await world.repo.task_events("acme", "t-old") == []
    shown = (await world.client.get(f"/api/v1/approvals/{record.approval_id}", headers=bearer(world.tokens["bob"]))).json()
    assert [e["action_id"] for e in shown["context"]] == ["a-0", "a-1"]  # younger than the cutoff: still beside the request
    assert await forget_task_events(world.repo, now - timedelta(days=30)) == 0
