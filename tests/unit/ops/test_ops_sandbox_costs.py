"""The sandbox executor answers from the record and refuses what the real executor refuses; costs add up; times parse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import schemas as s
from servicekit import KitSettings, Reject, SigningKey, action_digest, authorization_message
from servicekit.costs import ReviewPrice
from tidegate.ops.costs import cost_report, quantile, save_chart
from tidegate.ops.recorded import Recorded, Window, parse_time
from tidegate.ops.replay import RecordedAnswers, SandboxExecutor
from tidegate.ops.sandbox import sandbox_prefix, sandbox_settings

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
ARGS = {"ticket_id": "T-1", "tags": ["billing"]}


def authorized(
    key: SigningKey, args: dict[str, Any], *, expires: datetime | None = None, tamper: bool = False, action_id: str = "t-1:1"
) -> s.ActionAuthorized:
    data = s.ActionAuthorizedData(
        action_id=action_id, task_id="t-1", tenant_id="acme", step=1, tool="tag_ticket", args=args,
        authorization=s.Authorization(
            via="policy", policy_version="v", action_digest=action_digest("acme", "tag_ticket", args), issued_at=NOW,
            expires_at=expires or NOW + timedelta(minutes=5), key_id=key.key_id, signature="",
        ),
    )  # fmt: skip
    signed = data.model_copy(
        update={"authorization": data.authorization.model_copy(update={"signature": key.sign(authorization_message(data))})}
    )
    if tamper:
        signed = signed.model_copy(update={"args": {**args, "tags": ["refund-approved"]}})
    return s.ActionAuthorized.build(signed, source="tidegate/policy")


def recorded_window() -> Window:
    proposal = s.ActionProposedData(action_id="old-1", task_id="t-1", tenant_id="acme", step=1, tool="tag_ticket", args=ARGS, proposer="p")
    result = s.ActionResultData(
        action_id="old-1", task_id="t-1", tenant_id="acme", step=1, tool="tag_ticket", status="succeeded", result={"tags": ["billing"]},
        attempts=2, duration_ms=5.0, cost=s.ResultCost(usd=0.001),
    )  # fmt: skip
    events = [s.ActionProposed.build(proposal, source="p"), s.ActionSucceeded.build(result, source="tidegate/executor")]
    return Window([Recorded("t", 0, i, 0, e) for i, e in enumerate(events)])


def sandbox(tmp_path: Path) -> tuple[SandboxExecutor, list[Any], SigningKey]:
    key = SigningKey.load_or_create(tmp_path, "policy")
    published: list[Any] = []

    async def publish(topic: str, event: Any) -> None:
        published.append((topic, event))

    return SandboxExecutor(tmp_path, RecordedAnswers.from_window(recorded_window()), publish, clock=lambda: NOW), published, key


async def test_a_recorded_call_is_answered_from_the_record(tmp_path: Path) -> None:
    executor, published, key = sandbox(tmp_path)
    await executor.handle(authorized(key, ARGS))
    ((topic, event),) = published
    assert topic == "actions.results"
    assert isinstance(event, s.ActionSucceeded)
    assert (event.data.action_id, event.data.result, event.data.attempts) == ("t-1:1", {"tags": ["billing"]}, 2)
    await executor.handle(authorized(key, ARGS, action_id="t-1:2"))  # the record answers one call only: another action is not it
    assert published[-1][1].data.error.type == "unanswerable"
    assert (executor.answered, executor.unanswerable) == (1, 1)


async def test_a_repeat_of_an_action_gets_its_answer_again_and_is_not_another_call(tmp_path: Path) -> None:
    """An agent that proposed the refund again under its action id: the live executor answered from its record, so does replay."""
    executor, published, key = sandbox(tmp_path)
    first = authorized(key, ARGS)
    await executor.handle(first)
    await executor.handle(first)  # redelivered
    await executor.handle(authorized(key, ARGS))  # the same action authorized again (the policy answered the repeat)
    assert [e.data.status for _, e in published] == ["succeeded"] * 3
    assert len({e.id for _, e in published}) == 1  # the one answer, not a new result that a cost sum would count again
    assert (executor.answered, executor.unanswerable, executor.refused) == (1, 0, 0)
    with pytest.raises(Reject) as refused:  # another call under a used action id is never answered as that action
        await executor.handle(authorized(key, {"ticket_id": "T-1", "tags": ["other"]}))
    assert refused.value.code == "authorization_replayed"
    assert (executor.answered, executor.unanswerable, executor.refused) == (1, 0, 1)


async def test_a_call_never_made_is_unanswerable(tmp_path: Path) -> None:
    executor, published, key = sandbox(tmp_path)
    await executor.handle(authorized(key, {"ticket_id": "T-1", "tags": ["other"]}))
    assert isinstance(published[0][1], s.ActionFailed)
    assert published[0][1].data.attempts == 0


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda key, other: authorized(key, ARGS, tamper=True), "digest_mismatch"),
        (lambda key, other: authorized(other, ARGS), "unknown_key"),
        (lambda key, other: authorized(key, ARGS, expires=NOW - timedelta(seconds=1)), "authorization_expired"),
    ],
)
async def test_the_sandbox_refuses_what_the_executor_refuses(tmp_path: Path, make: Any, code: str) -> None:
    executor, published, key = sandbox(tmp_path)
    other = SigningKey.load_or_create(tmp_path / "elsewhere", "policy")
    with pytest.raises(Reject) as refused:
        await executor.handle(make(key, other))
    assert refused.value.code in (code, "signature_invalid")
    assert published == []


def outcome(task: str, status: str, total: float, workflow: str = "support_triage") -> s.Envelope:
    data = s.TaskOutcomeData(
        task_id=task,
        tenant_id="acme",
        workflow=workflow,
        status=status,
        summary="",
        duration_ms=1,
        cost=s.TaskCost(total=total),  # type: ignore[arg-type]
    )
    return (s.TaskCompleted if status == "completed" else s.TaskFailed).build(data, source="tidegate/planner")


def test_costs_per_outcome_blocked_and_review(tmp_path: Path) -> None:
    proposal = s.ActionProposedData(
        action_id="a", task_id="t1", tenant_id="acme", step=1, tool="issue_refund", args={}, proposer="p", cost=s.ProposalCost(usd=0.01)
    )
    denied = s.ActionDecidedData(
        action_id="a", task_id="t1", tenant_id="acme", tool="issue_refund", args={}, action_digest="d", outcome="deny",
        reasons=[s.Reason(code=s.ReasonCode.NEW_PAYEE_BLOCKED, policy_id="x")], policy_version="v", latency_ms=1,
    )  # fmt: skip
    rejected = s.ApprovalData(
        approval_id="ap", action_id="b", task_id="t2", tenant_id="acme", tool="issue_refund", args={}, action_digest="d",
        approvers=["x@acme.example"], expires_at=NOW,
    )  # fmt: skip
    events = [
        outcome("t1", "completed", 0.1), outcome("t2", "completed", 0.3), outcome("t3", "failed", 0.05),
        s.ActionProposed.build(proposal, source="p"), s.ActionDecided.build(denied, source="tidegate/policy"),
        s.ApprovalRejected.build(rejected, source="tidegate/approval"),
    ]  # fmt: skip
    report = cost_report(events, by="workflow", rate=ReviewPrice(6, 60))
    (g,) = report.as_dict()["groups"]
    assert (g["completed"], g["failed"]) == (2, 1)
    assert g["cost_per_completed_p50_usd"] == pytest.approx(0.2)
    assert g["cost_per_completed_p95_usd"] == pytest.approx(0.29)
    assert (g["blocked_proposals"], g["blocked_usd"]) == (1, 0.01)
    assert (g["rejected_proposals"], g["rejected_usd"], g["human_review_usd"]) == (1, 6.0, 6.0)
    path = save_chart(report, tmp_path / "c.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_quantile_and_time_parsing() -> None:
    assert quantile([], 0.5) == 0.0
    assert quantile([1.0, 3.0], 0.5) == 2.0
    assert parse_time("now", now=NOW) == NOW
    assert parse_time("15m", now=NOW) == NOW - timedelta(minutes=15)
    assert parse_time("-2h", now=NOW) == NOW - timedelta(hours=2)
    assert parse_time("2026-11-24T09:00:00") == datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    with pytest.raises(ValueError):  # noqa: PT011
        parse_time("yesterday-ish")


def test_the_replay_diff_tells_changed_plans_decisions_and_outcomes_apart() -> None:
    from tidegate.ops.replay import Story, TaskDiff

    def action(tool: str, digest: str, decision: str | None) -> dict[str, Any]:
        return {"tool": tool, "digest": digest, "decision": decision, "result": None}

    then = Story([action("tag_ticket", "a", "allow"), action("issue_refund", "b", "allow")], "completed", 0.1)
    same_plan_new_decision = Story([action("tag_ticket", "a", "allow"), action("issue_refund", "b", "escalate")], None, 0.1)
    diff = TaskDiff("t", "acme", then, same_plan_new_decision)
    assert (diff.actions_changed, diff.decisions_changed, diff.outcome_changed) == (False, True, False)
    new_plan = Story([action("tag_ticket", "c", "allow")], "failed", 0.0)
    diff = TaskDiff("t", "acme", then, new_plan)
    assert (diff.actions_changed, diff.decisions_changed, diff.outcome_changed) == (True, False, True)
    undecided = Story([action("tag_ticket", "a", None)], None, 0.0)
    assert not TaskDiff("t", "acme", then, undecided).decisions_changed


def test_a_sandbox_runs_under_the_sandbox_root_and_logs_in_as_ops(tmp_path: Path) -> None:
    prefix = sandbox_prefix("eval-banking")
    assert prefix.startswith("sandbox.eval-banking-")
    assert prefix.endswith(".")
    assert prefix != sandbox_prefix("eval-banking")
    kit = sandbox_settings(KitSettings(), prefix, tmp_path)
    assert (kit.topic_prefix, kit.kafka_principal) == (prefix, "ops")
    assert sandbox_settings(KitSettings(kafka_principal="admin"), prefix, tmp_path).kafka_principal == "admin"  # an explicit login wins
    with pytest.raises(ValueError, match=r"starts with 'sandbox\.'"):
        sandbox_settings(KitSettings(), "replay-1.", tmp_path)


async def test_a_window_is_read_at_kafka_precision_from_the_audit_log_as_from_the_bus(monkeypatch: pytest.MonkeyPatch) -> None:
    """A record stamped in the millisecond a window starts is in it, wherever the window is read from.

    The bus is searched by whole milliseconds (`offsets_for_times`), and the log's `kafka_ts` holds only those; the
    log was searched from the exact start instead, so a record in the start's millisecond but before its microseconds
    was on the bus's window and not the log's (tests/integration/ops/test_bad_records.py failed on it, about 1 run in 4).
    """
    from services.audit import PostgresAuditLog, SearchFilters
    from tidegate.ops.recorded import kafka_ms, read_audit_window

    asked: list[SearchFilters] = []

    class Log:
        async def search(self, filters: SearchFilters, *, limit: int) -> list[Any]:
            asked.append(filters)
            return []

        async def close(self) -> None:
            pass

    async def connect(dsn: str, *, max_size: int) -> Log:
        return Log()

    monkeypatch.setattr(PostgresAuditLog, "connect", connect)
    start, end = datetime(2026, 12, 2, 6, 30, 54, 301069, tzinfo=UTC), datetime(2026, 12, 2, 6, 30, 54, 320778, tzinfo=UTC)
    await read_audit_window("postgresql://unused", "tidegate.", start, end)
    assert (asked[0].since, asked[0].until) == (start.replace(microsecond=301000), end.replace(microsecond=320000))
    assert kafka_ms(start) == kafka_ms(start.replace(microsecond=301000)) == int(start.replace(microsecond=0).timestamp()) * 1000 + 301
    assert kafka_ms(datetime(1969, 12, 31, 23, 59, 59, 999500, tzinfo=UTC)) == -1  # rounded down, as Kafka's clock would be
