"""The on-call engineer's reads of outside agents' work (integrator5 finding 7; h35's note on task ids).

- `tidegate replay` told a call a human rejected exactly like one still pending (`escalate`, `after_human: null`);
- `tidegate costs` counted 0 failed against failed and unknown calls of outside agents (their tasks have no outcome);
- replay grouped, and `tidegate undo --task` read, a task's events by id alone: two tenants' tasks of one id as one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from typer.testing import CliRunner

import schemas as s
from services.audit import SeveralTenants
from services.audit.records import observe
from services.audit.repository import InMemoryAuditLog
from tidegate.cli import app as cli
from tidegate.ops import replay as replay_module
from tidegate.ops.costs import cost_report
from tidegate.ops.recorded import Recorded, Window
from tidegate.ops.replay_report import stories, then_now
from tidegate.ops.undo import read_recorded, undo_steps

NOW = datetime(2026, 12, 5, 11, 0, tzinfo=UTC)
TOOL = "oa_refund_order"


def _proposed(action_id: str, task: str, tenant: str = "acme", proposer: str = "external:client") -> s.ActionProposed:
    data = s.ActionProposedData(
        action_id=action_id, task_id=task, tenant_id=tenant, step=1, tool=TOOL, args={"order_id": action_id, "amount_usd": 800},
        proposer=proposer, cost=s.ProposalCost(usd=0.001),
    )  # fmt: skip
    return s.ActionProposed.build(data, source="urn:tidegate:client:external:client")


def _decided(action_id: str, task: str, outcome: str, via: str = "policy", tenant: str = "acme") -> s.ActionDecided:
    data = s.ActionDecidedData(
        action_id=action_id, task_id=task, tenant_id=tenant, tool=TOOL, args={}, action_digest="d" * 64, outcome=outcome,
        reasons=[], policy_version="sha256:abc", latency_ms=0.3, via=via,
    )  # fmt: skip
    return s.ActionDecided.build(data, source="tidegate/policy")


def _human(kind: type[s.Envelope], action_id: str, task: str, approver: str | None = "fin@acme.example") -> s.Envelope:
    data = s.ApprovalData(
        approval_id=f"ap-{action_id}", action_id=action_id, task_id=task, tenant_id="acme", tool=TOOL, args={},
        action_digest="d" * 64, expires_at=NOW + timedelta(hours=1), approver=approver,
    )  # fmt: skip
    return kind.build(data, source="tidegate/approval")


def _result(action_id: str, task: str, status: str, tenant: str = "acme", undo: s.UndoPlan | None = None) -> s.Envelope:
    data = s.ActionResultData(
        action_id=action_id, task_id=task, tenant_id=tenant, tool=TOOL, status=status, attempts=3 if status != "succeeded" else 1,
        duration_ms=1.0, cost=s.ResultCost(usd=0.002), result={} if status == "succeeded" else None, undo=undo,
        error=None if status == "succeeded" else s.ErrorInfo(type="timeout", message="no reply"),
    )  # fmt: skip
    kind = {"succeeded": s.ActionSucceeded, "failed": s.ActionFailed, "unknown": s.ActionUnknown}[status]
    return kind.build(data, source="tidegate/executor")


# --- replay: rejected, expired, pending -------------------------------------------------------


def test_replay_tells_a_rejected_call_from_a_pending_one() -> None:
    events = [
        _proposed("a-granted", "oa-approve"), _decided("a-granted", "oa-approve", "escalate"),
        _human(s.ApprovalGranted, "a-granted", "oa-approve"), _decided("a-granted", "oa-approve", "allow", via="approval"),
        _result("a-granted", "oa-approve", "succeeded"),
        _proposed("a-rejected", "oa-reject"), _decided("a-rejected", "oa-reject", "escalate"),
        _human(s.ApprovalRejected, "a-rejected", "oa-reject"),
        _proposed("a-expired", "oa-expire"), _decided("a-expired", "oa-expire", "escalate"),
        _human(s.ApprovalExpired, "a-expired", "oa-expire", approver=None),
        _proposed("a-pending", "oa-wait"), _decided("a-pending", "oa-wait", "escalate"),
        _human(s.ApprovalRequested, "a-pending", "oa-wait", approver=None),
    ]  # fmt: skip
    told = {task: story.actions[0]["after_human"] for (_tenant, task), story in stories(events).items()}
    assert told == {"oa-approve": "allow", "oa-reject": "reject", "oa-expire": "expired", "oa-wait": None}
    assert [then_now(told[t]) for t in ("oa-approve", "oa-reject", "oa-expire", "oa-wait")] == [
        " (human → allow)", " (human → reject)", " (expired: no human answered)", "",
    ]  # fmt: skip


def test_replay_groups_two_tenants_tasks_of_one_id_apart() -> None:
    events = [_proposed("a-1", "T-1001", "acme"), _proposed("a-1", "T-1001", "globex"), _result("a-1", "T-1001", "failed", "globex")]
    told = stories(events)
    assert set(told) == {("acme", "T-1001"), ("globex", "T-1001")}
    assert [a["result"] for a in told[("acme", "T-1001")].actions] == [None]  # globex's failure is not acme's
    assert [a["result"] for a in told[("globex", "T-1001")].actions] == ["failed"]


def test_replay_of_a_task_id_two_tenants_used_exits_1_naming_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    recorded = [Recorded("tidegate.actions.proposed", 0, n, 0, e) for n, e in enumerate(
        [_proposed("a-1", "T-1001", "globex"), _proposed("a-2", "T-1001", "acme")]
    )]  # fmt: skip

    async def window(*_args: Any, **_kw: Any) -> Window:
        return Window(events=recorded)

    async def no_sandbox(*_args: Any, **_kw: Any) -> None:
        raise AssertionError("a sandbox was made for a task id of two tenants")

    monkeypatch.setattr(replay_module, "recorded_window", window)
    monkeypatch.setattr(replay_module, "make_sandbox", no_sandbox)
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))  # its log goes there, not into the repository's .tidegate
    mixed = CliRunner().invoke(cli, ["replay", "--from", "1h", "--task", "T-1001", "--json"])
    assert mixed.exit_code == 1, mixed.output
    assert "task id 'T-1001' is used by 2 tenants: globex, acme; say whose (--tenant)" in mixed.stderr


# --- costs: outside agents' calls ---------------------------------------------------------------


def test_costs_count_outside_agents_calls_one_by_one() -> None:
    events = [
        _proposed("a-ok", "oa-fail"), _result("a-ok", "oa-fail", "succeeded"),
        _proposed("a-failed", "oa-fail"), _result("a-failed", "oa-fail", "failed"),
        _proposed("a-unknown", "oa-die"), _result("a-unknown", "oa-die", "unknown"),
        _proposed("a-planned", "T-1", proposer="tidegate/planner/playbook"), _result("a-planned", "T-1", "failed"),
    ]  # fmt: skip
    [group] = cost_report(events, by="workflow").as_dict()["groups"]
    assert (group["name"], group["outside_agent_calls"]) == ("unknown", {"succeeded": 1, "failed": 1, "unknown": 1})
    assert group["outside_agent_calls_usd"] == pytest.approx(3 * 0.003)  # each: its proposal's model cost and the call's
    assert (group["completed"], group["failed"]) == (0, 0)  # still tasks only: the planner's T-1 has no outcome in the window
    [acme] = cost_report(events, by="tenant").as_dict()["groups"]
    assert acme["outside_agent_calls"] == {"succeeded": 1, "failed": 1, "unknown": 1}


# --- undo --task: one tenant's task ------------------------------------------------------------


async def test_undo_of_a_task_id_two_tenants_used_needs_the_tenant_and_undoes_only_its_calls() -> None:
    ready = s.UndoPlan(status="ready", tool="untag_ticket", args={"ticket_id": "T-1"})
    log = InMemoryAuditLog()
    events = [
        ("actions.results", _result("a-globex", "T-1001", "succeeded", "globex", undo=ready)),
        ("actions.results", _result("a-acme", "T-1001", "succeeded", "acme", undo=ready)),
    ]
    await log.append(
        [
            observe(topic="tidegate." + topic, partition=0, offset=n, timestamp_ms=1_790_000_000_000 + n, timestamp_type=0,
                    key=e.key, value=s.encode(e), headers=[], prefix="tidegate.")
            for n, (topic, e) in enumerate(events)
        ]
    )  # fmt: skip
    pg = cast(Any, log)  # the in-memory twin of the PostgreSQL log: the same reads

    with pytest.raises(SeveralTenants) as several:
        await read_recorded(pg, "tidegate.", task_id="T-1001")
    assert several.value.tenants == ["globex", "acme"]

    acme = undo_steps(await read_recorded(pg, "tidegate.", task_id="T-1001", tenant="acme"), requested_by="ops@acme.example")
    assert [(step.action_id, step.proposal.tenant_id if step.proposal else None) for step in acme] == [("a-acme", "acme")]
