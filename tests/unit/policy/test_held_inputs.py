"""A planner's proposal waits for its task past the usual wait while the consumer that learns tasks is retrying.

An SRE probe stopped PostgreSQL under load: once it came back, the proposals were decided at once while the `tasks`
consumer still waited out its backoff (up to 5 s), longer than the 2 s a proposal waits for its task, so 16 of 23
autonomous tasks were decided `draft_mode` ("the task runs in draft mode") and went to humans.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from test_policy_provenance import onboarded_service

from schemas import ActionProposed, ActionProposedData, TaskSubmitted, TaskSubmittedData
from servicekit import KitSettings
from services.policy import InMemoryPolicyRepository, unread
from services.policy.app import PolicyDeps, PolicyProcess, build
from services.policy.service import PolicyService
from services.policy.settings import PolicySettings

NOTE = {"ticket_id": "T-1001", "note": "triaged"}  # write_low with an undo: alone when autonomous


async def _service(tmp_path: Path, held: list[bool]) -> PolicyService:
    async def inputs_held() -> bool:
        return held[0]

    return await onboarded_service(
        tmp_path, settings=PolicySettings(provenance_wait_s=0.2), planned=lambda event: True, inputs_held=inputs_held
    )


async def _decided_while_the_task_comes_late(svc: PolicyService, held: list[bool]) -> list[str]:
    data = ActionProposedData(
        action_id="t-1:1", task_id="t-1", tenant_id="acme", step=1, tool="add_internal_note", args=NOTE,
        proposer="tidegate/planner/playbook", requested_by="ann@acme.example", mode="autonomous",
    )  # fmt: skip
    request = TaskSubmittedData(
        task_id="t-1", tenant_id="acme", workflow="support_triage", input={"ticket_id": "T-1001"}, requested_by="ann@acme.example",
        mode="autonomous",
    )  # fmt: skip

    async def tasks_consumer_after_its_backoff() -> None:
        await asyncio.sleep(0.6)  # three times the proposal's own wait
        await svc.on_tasks([TaskSubmitted.build(request, source="tidegate/cli")])
        held[0] = False

    late = asyncio.create_task(tasks_consumer_after_its_backoff())
    decided = (await svc.on_proposed(ActionProposed.build(data, source="tidegate/planner"))).decided
    await late
    assert decided is not None
    return [r.code.value for r in decided.data.reasons]


async def test_a_proposal_waits_for_its_task_while_the_tasks_consumer_retries(tmp_path: Path) -> None:
    held = [True]
    assert await _decided_while_the_task_comes_late(await _service(tmp_path, held), held) == ["low_risk_write_allowed"]


async def test_with_nothing_held_it_still_fails_closed_after_its_wait(tmp_path: Path) -> None:
    held = [False]
    assert await _decided_while_the_task_comes_late(await _service(tmp_path, held), held) == ["draft_mode"]


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.policy import service

    monkeypatch.setattr(service, "HELD_WAIT_S", 5.0)


# After a broker restart (a chaos run under 8 s Kafka sessions): no handler retried, but the `policy.tasks` consumer was
# still rejoining its group when the proposals' consumer read a planner's proposal; it was decided `draft_mode` 0.4 s
# before its task was learned, its write went to a human group the run's approver is not in, and the task stayed open.


class _TasksConsumer:
    """The `policy.tasks` group's consumer as the broker answers for it: `behind` records of partition 0 not handled yet."""

    def __init__(self, topic: str, behind: int) -> None:
        self.topic, self.behind, self.asked = topic, behind, 0

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1} if topic == self.topic else set()

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.asked += 1
        return {tp: 40 for tp in tps}

    async def committed(self, tp: TopicPartition) -> int:
        return 40 - self.behind if tp.partition == 0 else 40


def _read_to_its_end(process: PolicyProcess, topic: str) -> None:
    """The consumer of the group that reads `topic`, as the broker answers for one that has handled every record."""
    (poller,) = [p for p in process.bus.pollers if process.bus.topic(topic) in p.topics]
    poller.consumer = _TasksConsumer(process.bus.topic(topic), behind=0)  # type: ignore[assignment]


async def _held(svc: PolicyService) -> bool:
    return await svc.inputs_held()


async def test_the_running_policy_holds_a_decision_while_its_tasks_group_has_records_it_has_not_handled(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    process = build(KitSettings(keys_dir=tmp_path / "keys"), deps=PolicyDeps(repo=InMemoryPolicyRepository()))
    process.bus._register()  # its consumers, as its start makes them (none connects here)
    (poller,) = [p for p in process.bus.pollers if process.bus.topic("tasks") in p.topics]
    consumer = _TasksConsumer(process.bus.topic("tasks"), behind=1)
    poller.consumer = consumer  # type: ignore[assignment]
    _read_to_its_end(process, "actions.results")  # the other group a decision waits for (its own test below)
    assert process.bus.handlers_retrying == 0  # nothing retries: the consumer is only behind
    assert await _held(process.policy)
    consumer.behind = 0
    await asyncio.sleep(unread.FRESH_S)  # an answer is kept that long: the next one is asked afresh
    assert not await _held(process.policy)  # read to its end: a task still not learned is not coming


async def test_a_broker_that_does_not_answer_counts_as_unread(monkeypatch: pytest.MonkeyPatch) -> None:
    class Silent(_TasksConsumer):
        async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
            await asyncio.sleep(60)
            raise AssertionError("unreachable")

    monkeypatch.setattr(unread, "ASK_TIMEOUT_S", 0.05)
    assert await unread.GroupUnread(lambda: Silent("t", behind=0), "t")()
    assert await unread.GroupUnread(lambda: None, "t")()  # not started yet: not known either
    assert not await unread.GroupUnread(lambda: _TasksConsumer("t", behind=0), "t")()


async def test_an_idle_group_read_to_its_end_is_not_held_for_the_fetch_the_broker_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The end offsets are asked on the consumer's own connection, answered behind the fetch the broker holds for an idle
    consumer (`fetch_max_wait_ms`): asked within `ASK_TIMEOUT_S` alone, a group read to its end was "not known" one time
    in two, and a proposal whose task never came was held 30 s, not decided after its 2 s (a CI run under load)."""

    class BehindAHeldFetch(_TasksConsumer):
        async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
            await asyncio.sleep(0.25)  # the hold of the fetch before it on the connection
            return await super().end_offsets(tps)

    monkeypatch.setattr(unread, "ASK_TIMEOUT_S", 0.1)
    (tmp_path / "keys").mkdir()
    kit = KitSettings(keys_dir=tmp_path / "keys", fetch_max_wait_ms=300)
    process = build(kit, deps=PolicyDeps(repo=InMemoryPolicyRepository()))
    process.bus._register()
    for topic in ("tasks", "actions.results"):
        (poller,) = [p for p in process.bus.pollers if process.bus.topic(topic) in p.topics]
        poller.consumer = BehindAHeldFetch(process.bus.topic(topic), behind=0)  # type: ignore[assignment]
    assert not await _held(process.policy)
    results_held = process.policy.results_held
    assert results_held is not None
    assert not await results_held()


@pytest.mark.parametrize(
    ("behind", "reasons"),
    [(True, ["low_risk_write_allowed"]), (False, ["draft_mode"])],
    ids=["the-group-behind-keeps-it-waiting", "read-to-its-end-it-still-fails-closed"],
)
async def test_an_awaited_held_decides_as_a_retrying_consumer_does(tmp_path: Path, behind: bool, reasons: list[str]) -> None:
    held = [behind]

    async def tasks_group_unread() -> bool:
        return held[0]

    svc = await onboarded_service(
        tmp_path, settings=PolicySettings(provenance_wait_s=0.2), planned=lambda event: True, inputs_held=tasks_group_unread
    )
    assert await _decided_while_the_task_comes_late(svc, held) == reasons


async def test_a_decision_waiting_only_for_a_result_is_not_held_by_the_tasks_group(tmp_path: Path) -> None:
    """An outside agent's call waiting for a result never coming, while the `policy.tasks` group is behind (as under load).

    The unread tasks group says a task's request may still come, nothing of a result: before, it held such a decision
    `HELD_WAIT_S` past its wait (30 s in production) instead of failing closed after `provenance_wait_s`.
    """
    import time

    from schemas import ActionProposed, ActionProposedData

    async def tasks_group_behind() -> bool:
        return True

    async def nothing_retrying() -> bool:
        return False

    svc = await onboarded_service(tmp_path, settings=PolicySettings(provenance_wait_s=0.1), inputs_held=tasks_group_behind)
    svc.results_held = nothing_retrying  # as the running service wires it (`app.py`)

    async def decide(action_id: str, tool: str, args: dict[str, object]) -> Any:
        data = ActionProposedData(
            action_id=action_id, task_id="t-9", tenant_id="acme", step=1, tool=tool, args=args, proposer="agent", mode="autonomous"
        )
        decided = (await svc.on_proposed(ActionProposed.build(data, source="agent"))).decided
        assert decided is not None
        return decided.data

    assert (await decide("a-0", "get_ticket", {"ticket_id": "T-9"})).outcome == "allow"  # its result never comes
    started = time.monotonic()
    await decide("a-1", "send_reply", {"ticket_id": "T-9", "to": "someone@example.com", "body": "hi"})
    assert time.monotonic() - started < 3.0  # its wait, not HELD_WAIT_S (5 s here) more


async def test_the_approver_reads_that_the_task_was_not_learned_not_that_it_runs_in_draft_mode(tmp_path: Path) -> None:
    """The approver paged at 2 a.m. for an autonomous task's write decided before its request reached the policy.

    Before, the reason said "the task runs in draft mode (draft)": the approver looked for who had set the task to draft,
    while its request asked for autonomous and was only late on `tasks`. The code stays `draft_mode` (it is decided as
    draft, failing closed: integrators match on it); the policy and its message say what happened.
    """
    svc = await _service(tmp_path, [False])
    data = ActionProposedData(
        action_id="t-9:1", task_id="t-9", tenant_id="acme", step=1, tool="add_internal_note", args=NOTE,
        proposer="tidegate/planner/playbook", requested_by="ann@acme.example", mode="autonomous",
    )  # fmt: skip
    decided = (await svc.on_proposed(ActionProposed.build(data, source="tidegate/planner"))).decided
    assert decided is not None
    (reason,) = decided.data.reasons
    assert (decided.data.outcome, reason.code.value, reason.policy_id) == ("escalate", "draft_mode", "task-not-learned")
    assert "not learned" in reason.message
    assert "runs in draft mode" not in reason.message

    learned = ActionProposedData(**{**data.model_dump(), "action_id": "t-8:1", "task_id": "t-8", "mode": "draft"})
    request = TaskSubmittedData(
        task_id="t-8", tenant_id="acme", workflow="support_triage", input={"ticket_id": "T-1001"}, requested_by="ann@acme.example",
        mode="draft",
    )  # fmt: skip
    await svc.on_tasks([TaskSubmitted.build(request, source="tidegate/cli")])
    drafted = (await svc.on_proposed(ActionProposed.build(learned, source="tidegate/planner"))).decided
    assert drafted is not None  # a task that asked for draft still says so
    assert [(r.code.value, r.policy_id) for r in drafted.data.reasons] == [("draft_mode", "draft-mode")]


async def test_the_running_policy_holds_a_decision_while_its_results_group_has_records_it_has_not_handled(tmp_path: Path) -> None:
    """After a broker restart the `policy.results` consumer is the one still rejoining: a proposal waiting for its task's
    earlier read (untrusted output) found it unseen after its wait and escalated `tainted_argument` ("a possible prompt
    injection") while the result was on the bus. It waits as for the tasks group."""
    (tmp_path / "keys").mkdir()
    process = build(KitSettings(keys_dir=tmp_path / "keys"), deps=PolicyDeps(repo=InMemoryPolicyRepository()))
    process.bus._register()
    _read_to_its_end(process, "tasks")  # the tasks group read to its end; the results group one record behind
    (results,) = [p for p in process.bus.pollers if process.bus.topic("actions.results") in p.topics]
    consumer = _TasksConsumer(process.bus.topic("actions.results"), behind=1)
    results.consumer = consumer  # type: ignore[assignment]
    assert await _held(process.policy)
    results_held = process.policy.results_held
    assert results_held is not None
    assert await results_held()  # the wait of a decision whose task is learned and waits for its result only
    consumer.behind = 0
    await asyncio.sleep(unread.FRESH_S)
    assert not await _held(process.policy)
    assert not await results_held()
