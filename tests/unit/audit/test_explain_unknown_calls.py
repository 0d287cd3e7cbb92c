"""`tidegate audit explain` of a call that ended `unknown` (integrator5 findings 6 and 7).

Finding 6: the outside tool service's late `tool.reply` (ok, after the executor gave up) was in the log, yet explain said only
"Tool call unknown after 3 attempt(s) … timeout". Finding 7: while its follow-up was pending, the status line said "all ended".
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import schemas as s
from schemas.examples import sample_events
from services.audit.explanation import FOLLOW_UP_PENDING, Explanation, explain
from services.audit.repository import InMemoryAuditLog
from tidegate.audit_render import render_html, render_markdown

NOW = datetime(2026, 12, 5, 11, 22, tzinfo=UTC)
TASK = "oa-slow"
TOOL = "oa_refund_order"
SRC = "urn:tidegate:client:external:client"


def _proposed(action_id: str, step: int, tool: str = TOOL) -> tuple[str, s.Envelope]:
    data = s.ActionProposedData(
        action_id=action_id, task_id=TASK, tenant_id="acme", step=step, tool=tool, args={"order_id": "o-66", "amount_usd": 60},
        proposer="external:client", mode="autonomous", requested_by="agent@acme.example",
    )  # fmt: skip
    return "actions.proposed", s.ActionProposed.build(data, source=SRC)


def _result(action_id: str, status: str, tool: str = TOOL) -> tuple[str, s.Envelope]:
    error = (
        s.ErrorInfo(type="timeout", message="no reply within 20.0 s", retryable=True, maybe_applied=True) if status != "succeeded" else None
    )
    data = s.ActionResultData(
        action_id=action_id, task_id=TASK, tenant_id="acme", tool=tool, status=status, error=error,
        result={"ok": True} if status == "succeeded" else None, attempts=3 if status != "succeeded" else 1, duration_ms=60_000.0,
    )  # fmt: skip
    kind = {"succeeded": s.ActionSucceeded, "failed": s.ActionFailed, "unknown": s.ActionUnknown}[status]
    return "actions.results", kind.build(data, source="tidegate/executor")


def _reply(action_id: str, *, ok: bool = True, attempt: int = 3, tool: str = TOOL) -> tuple[str, s.Envelope]:
    error = None if ok else s.ErrorInfo(type="card_declined", message="the card was declined", maybe_applied=False)
    data = s.ToolReplyData(
        action_id=action_id, task_id=TASK, tenant_id="acme", tool=tool, attempt=attempt, ok=ok,
        result={"refund_id": "re_66"} if ok else None, error=error,
    )  # fmt: skip
    return f"tools.{tool}.replies", s.ToolReply.build(data, source=f"urn:tidegate:tool:{tool}")


def _resolved(action_id: str, resolution: str) -> tuple[str, s.Envelope]:
    data = s.ApprovalData(
        approval_id=f"fu-{action_id}", action_id=action_id, task_id=TASK, tenant_id="acme", tool=TOOL, args={}, action_digest="d" * 64,
        expires_at=NOW + timedelta(days=3), approver="fin@acme.example", resolution=resolution, decided_at=NOW + timedelta(hours=1),
    )  # fmt: skip
    return "approvals", s.ApprovalResolved.build(data, source="tidegate/approval")


async def _explained(make: Any, events: list[tuple[str, s.Envelope]]) -> Explanation:
    log = InMemoryAuditLog()
    await log.append([make(topic, s.encode(event), offset=n, key=event.key) for n, (topic, event) in enumerate(events)])
    return explain(TASK, await log.task_rows(TASK, "tidegate."))


async def test_a_reply_after_the_executor_gave_up_is_shown_under_the_call(make: Any) -> None:
    x = await _explained(make, [_proposed("a-1", 1), _result("a-1", "unknown"), _reply("a-1")])
    [late] = x.actions[0].late_replies
    assert (late.ok, late.after_end, late.attempt, late.result) == (True, True, 3, {"refund_id": "re_66"})

    md = render_markdown(x)
    said = f"the tool replied ok at {late.at} (attempt 3), after the executor gave up: it probably happened; check the system of record"
    assert md.index("**Tool call** unknown after 3 attempt(s)") < md.index(f"- **Late reply:** {said}")
    assert "re_66" in md
    assert said in render_html(x)
    assert json.loads(x.model_dump_json())["actions"][0]["late_replies"][0]["ok"] is True


async def test_replies_the_executor_took_or_that_name_another_call_are_not_late(make: Any) -> None:
    x = await _explained(
        make,
        [
            _proposed("a-1", 1),
            _reply("a-1", ok=False, attempt=1),  # the error the executor took (then retried): the call's own error says it
            _reply("a-1", attempt=2),  # an ok to an attempt the executor no longer waited for: it did not take it
            _reply("a-1", attempt=3, tool="oa_lookup_order"),  # names another tool: not this call's
            _result("a-1", "failed"),
            _proposed("a-2", 2),
            _reply("a-2", attempt=1),  # the reply a success was made of
            _result("a-2", "succeeded"),
            _reply("a-2", attempt=1),  # a redelivered reply of a call that succeeded: nothing to add
        ],
    )
    first, second = x.actions
    assert [(r.attempt, r.ok, r.after_end) for r in first.late_replies] == [(2, True, False)]
    assert "to attempt 2, which the executor no longer waited for: it probably happened" in render_markdown(x)
    assert second.late_replies == []
    assert first.follow_up is None  # failed, not unknown: no follow-up


async def test_an_error_replied_late_says_whether_it_may_have_taken_effect(make: Any) -> None:
    x = await _explained(make, [_proposed("a-1", 1), _result("a-1", "unknown"), _reply("a-1", ok=False)])
    md = render_markdown(x)
    assert "the tool replied card_declined: the card was declined at" in md
    assert "after the executor gave up; check the system of record" in md
    assert "it probably happened" not in md


async def test_an_unknown_call_is_pending_a_follow_up_until_a_human_resolves_it(make: Any) -> None:
    ran = [_proposed("a-1", 1), _result("a-1", "succeeded"), _proposed("a-2", 2), _result("a-2", "unknown")]
    x = await _explained(make, ran)
    assert x.actions[1].follow_up == "pending"
    assert (x.status, x.follow_ups_pending) == ("open", 1)
    assert x.summary == f"no task record (proposed by a client); 2 actions, 1 {FOLLOW_UP_PENDING}, 1 ended: 1 succeeded"
    md = render_markdown(x)
    assert "all ended" not in md
    assert f"- **Follow-up:** {FOLLOW_UP_PENDING}: no `approval.resolved` recorded yet" in md
    assert "tidegate approvals list --action a-2" in md
    assert "all ended" not in render_html(x)

    done = await _explained(make, [*ran, _resolved("a-2", "confirmed_not_done")])
    assert (done.status, done.follow_ups_pending, done.actions[1].follow_up) == ("ended", 0, "confirmed_not_done")
    assert done.summary == (
        "no task record (proposed by a client); 2 actions, all ended: 1 succeeded, 1 unknown (resolved: confirmed_not_done)"
    )
    md = render_markdown(done)
    assert "**Follow-up:**" not in md
    assert "resolved (confirmed_not_done) by fin@acme.example" in md


async def test_a_planner_task_s_outcome_says_a_follow_up_is_pending(make: Any) -> None:
    sample = next(e for _, e in sample_events() if isinstance(e, s.TaskFailed))
    failed = s.TaskFailed.build(sample.data.model_copy(update={"task_id": TASK, "summary": "issue_refund: outcome unknown"}), source="p")
    x = await _explained(make, [_proposed("a-1", 1), _result("a-1", "unknown"), ("tasks.outcomes", failed)])
    assert (x.status, x.summary) == ("failed", f"issue_refund: outcome unknown; 1 call(s) {FOLLOW_UP_PENDING}")
