"""Temporal 1.35: the governed activity in the SDK's offline `ActivityEnvironment`, completed asynchronously by the bridge.

The workflow side (a worker and a test server) is not run: the Temporal test server is a binary the
SDK downloads, which this machine cannot do. What is tested is the activity and the completion bridge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment

from integrations.harness import ReadsOpened, rule, wait_pending
from tidegate.client import ANSWER_TOPICS, ClientSettings, Executed, MemoryTransport, Tidegate
from tidegate.client.scripted import ScriptedTidegate
from tidegate.integrations.temporal import GovernedCall, PendingActivities, TidegateActivities, complete_decided

# What `activity.raise_complete_async()` raises; the SDK keeps its class private.
COMPLETE_ASYNC = activity._CompleteAsyncError


@pytest.fixture
async def governance(bus: MemoryTransport) -> AsyncIterator[ScriptedTidegate]:
    """Here the tools are catalog tools the executor runs itself (a workflow's activities have no functions to serve)."""
    local = {name: (lambda args: {"ok": True, **args}) for name in ("tag_ticket", "issue_refund", "delete_customer_data")}
    async with ScriptedTidegate(bus, rule, tools=local) as scripted:
        yield scripted


class FakeTemporal:
    """Stands in for `temporal_client.get_async_activity_handle`: records what each task token was completed with."""

    def __init__(self) -> None:
        self.completed: dict[bytes, Any] = {}

    def __call__(self, *, task_token: bytes) -> Any:
        temporal = self

        class Handle:
            async def complete(self, result: Any = None) -> None:
                assert task_token not in temporal.completed, "completed twice"
                temporal.completed[task_token] = result

        return Handle()


def environment(activity_id: str = "1", token: bytes = b"token-1", attempt: int = 1, run_id: str = "run-1") -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        ActivityEnvironment.default_info(),
        workflow_id="refund-wf",
        workflow_run_id=run_id,
        activity_id=activity_id,
        task_token=token,
        attempt=attempt,
    )
    return env


async def test_allowed_and_denied_calls_return_at_once(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, tmp_path: Path
) -> None:
    async with make_client() as client:
        activities = TidegateActivities(client, PendingActivities(tmp_path / "pending.sqlite3"))
        allowed = await environment("1").run(activities.propose, GovernedCall("tag_ticket", {"ticket_id": "T-1"}))
        denied = await environment("2").run(activities.propose, GovernedCall("delete_customer_data", {"customer_id": "c1"}))
    assert (allowed["outcome"], allowed["action_id"]) == ("executed", "temporal:refund-wf:run-1:1")
    assert (denied["outcome"], denied["reasons"]) == ("denied", ["human_only"])
    assert governance.calls.get("delete_customer_data") is None


@pytest.mark.parametrize(("decision", "outcome"), [("approve", "executed"), ("edit", "executed"), ("reject", "rejected")])
async def test_an_escalated_activity_completes_asynchronously_with_the_human_decision(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, tmp_path: Path, decision: str, outcome: str
) -> None:
    pending = PendingActivities(tmp_path / "pending.sqlite3")
    temporal = FakeTemporal()
    async with make_client() as client:
        activities = TidegateActivities(client, pending)
        with pytest.raises(COMPLETE_ASYNC):
            await environment().run(activities.propose, GovernedCall("issue_refund", {"payee_id": "cus_1", "amount_usd": 900.0}))
        assert [row[0] for row in pending.rows()] == ["temporal:refund-wf:run-1:1"]
        assert await complete_decided(client, pending, temporal, timeout_s=0.2) == 0  # nobody decided yet

        approval_id = await wait_pending(governance)
        if decision == "reject":
            await governance.reject(approval_id, "bob@acme.example")
        else:
            await governance.approve(approval_id, edited_args={"payee_id": "cus_1", "amount_usd": 450.0} if decision == "edit" else None)
        assert await complete_decided(client, pending, temporal, timeout_s=5) == 1
    result = temporal.completed[b"token-1"]
    assert result["outcome"] == outcome
    assert pending.rows() == []
    runs = governance.calls.get("issue_refund", [])
    assert runs == ([] if decision == "reject" else [{"payee_id": "cus_1", "amount_usd": 450.0 if decision == "edit" else 900.0}])


async def test_a_worker_crash_and_a_retried_attempt_never_propose_twice(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, tmp_path: Path
) -> None:
    path = tmp_path / "pending.sqlite3"
    call = GovernedCall("issue_refund", {"payee_id": "cus_1", "amount_usd": 700.0})
    async with make_client() as first:
        with pytest.raises(COMPLETE_ASYNC):
            await environment(token=b"token-1").run(TidegateActivities(first, PendingActivities(path)).propose, call)
    # The worker died; Temporal retries the activity on another worker (same activity id, new task token).
    async with make_client() as second:
        with pytest.raises(COMPLETE_ASYNC):
            await environment(token=b"token-2", attempt=2).run(TidegateActivities(second, PendingActivities(path)).propose, call)
        await governance.approve(await wait_pending(governance))
        temporal = FakeTemporal()
        assert await complete_decided(second, PendingActivities(path), temporal, timeout_s=5) == 1
    assert list(temporal.completed) == [b"token-2"]
    assert temporal.completed[b"token-2"]["outcome"] == "executed"
    assert len(governance.proposals) == 1
    assert len(governance.calls["issue_refund"]) == 1


async def test_a_reused_workflow_id_proposes_its_own_calls_not_the_earlier_runs(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, tmp_path: Path
) -> None:
    # Workflow ids are reusable and activity ids restart at 1: only the run id tells the two calls apart.
    async with make_client() as client:
        activities = TidegateActivities(client, PendingActivities(tmp_path / "pending.sqlite3"))
        first = await environment(run_id="run-1").run(activities.propose, GovernedCall("tag_ticket", {"ticket_id": "T-1"}))
        second = await environment(run_id="run-2").run(activities.propose, GovernedCall("tag_ticket", {"ticket_id": "T-2"}))
    assert (first["action_id"], second["action_id"]) == ("temporal:refund-wf:run-1:1", "temporal:refund-wf:run-2:1")
    assert governance.calls["tag_ticket"] == [{"ticket_id": "T-1"}, {"ticket_id": "T-2"}]


class GoneOrDown(FakeTemporal):
    """Temporal that answers NOT_FOUND for one token (the workflow ended meanwhile) and is unreachable for another."""

    def __call__(self, *, task_token: bytes) -> Any:
        temporal = self

        class Handle:
            async def complete(self, result: Any = None) -> None:
                if task_token == b"token-gone":
                    raise RPCError("workflow execution already completed", RPCStatusCode.NOT_FOUND, b"")
                if task_token == b"token-down":
                    raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")
                temporal.completed[task_token] = result

        return Handle()


async def test_an_activity_that_cannot_be_completed_does_not_block_the_others(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pending = PendingActivities(tmp_path / "pending.sqlite3")
    temporal = GoneOrDown()
    async with make_client() as client:
        activities = TidegateActivities(client, pending)
        for activity_id, token in (("1", b"token-gone"), ("2", b"token-down"), ("3", b"token-live")):
            with pytest.raises(COMPLETE_ASYNC):
                await environment(activity_id, token).run(
                    activities.propose, GovernedCall("issue_refund", {"payee_id": f"cus_{activity_id}", "amount_usd": 900.0})
                )
        for request in list(governance.pending()):
            await governance.approve(request.approval_id)
        assert await complete_decided(client, pending, temporal, timeout_s=5) == 1
        assert [row[0] for row in pending.rows()] == ["temporal:refund-wf:run-1:2"]  # gone: dropped; unreachable: kept
        assert await complete_decided(client, pending, temporal, timeout_s=5) == 0  # the next sweep raises nothing either
    assert list(temporal.completed) == [b"token-live"]
    assert "temporal:refund-wf:run-1:1 is gone" in caplog.text
    assert "temporal:refund-wf:run-1:2 not completed" in caplog.text


async def test_a_sweep_reads_the_answer_topics_once_for_all_its_waiting_activities(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, bus: MemoryTransport, tmp_path: Path
) -> None:
    pending = PendingActivities(tmp_path / "pending.sqlite3")
    temporal = FakeTemporal()
    async with make_client() as client:
        activities = TidegateActivities(client, pending)
        for n in range(10):
            with pytest.raises(COMPLETE_ASYNC):
                await environment(str(n), b"token-%d" % n).run(
                    activities.propose, GovernedCall("issue_refund", {"payee_id": f"cus_{n}", "amount_usd": 900.0})
                )
        approved, rejected, *_ = governance.pending()
        await governance.approve(approved.approval_id)
        await governance.reject(rejected.approval_id)
        reads = ReadsOpened(bus)
        assert await complete_decided(client, pending, temporal, timeout_s=0.5) == 2
    assert reads.count == 1  # one per waiting activity (10) before
    assert {result["action_id"]: result["outcome"] for result in temporal.completed.values()} == {
        approved.action_id: "executed",
        rejected.action_id: "rejected",
    }
    assert len(pending.rows()) == 8


async def test_an_activity_whose_id_another_call_took_is_kept_and_logged_and_the_others_complete(
    make_client: Callable[[], Tidegate],
    governance: ScriptedTidegate,
    bus: MemoryTransport,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    taken = "temporal:refund-wf:run-1:taken"
    pending = PendingActivities(tmp_path / "pending.sqlite3")
    temporal = FakeTemporal()
    async with make_client() as client:
        before = (await bus.end(ANSWER_TOPICS)).token()
        async with Tidegate(ClientSettings(tenant="globex"), transport=bus) as globex:  # another tenant takes the id first
            assert isinstance(await globex.propose("tag_ticket", {"ticket_id": "G-1"}, action_id=taken), Executed)
        pending.add(taken, before, b"token-taken")  # a row the policy refused (say, recorded by a bridge of another tenant)
        with pytest.raises(COMPLETE_ASYNC):
            await environment("1", b"token-1").run(
                TidegateActivities(client, pending).propose, GovernedCall("issue_refund", {"payee_id": "cus_1", "amount_usd": 900.0})
            )
        await governance.approve(await wait_pending(governance))
        assert await complete_decided(client, pending, temporal, timeout_s=5) == 1  # before: ActionIdReused failed the sweep
    assert list(temporal.completed) == [b"token-1"]
    assert [row[0] for row in pending.rows()] == [taken]
    [error] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert f"temporal activity {taken} kept for a person to look at" in error.getMessage()
    assert "action_id_reused" in error.getMessage()
