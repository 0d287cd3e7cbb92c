"""The planner's state machine: pure functions from (task state, event) to (new state, events to publish).

A task holds a queue of planned steps. The planner proposes one at a time; a decision, an approval
or a result moves the current step on, and either the next step is proposed or the task closes with
its cost. Nothing here does I/O: the handlers load the state, call these functions, save and publish.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schemas import (
    ActionCounts,
    ActionDecidedData,
    ActionProposed,
    ActionProposedData,
    ActionResultData,
    ApprovalData,
    Envelope,
    ReasonCode,
    TaskCompleted,
    TaskFailed,
    TaskOutcomeData,
    TaskSubmittedData,
    digest,
)
from services.planner.action_ids import ActionIds
from services.planner.task_state import CostRates, Outbound, PlannedStep, StepRecord, StepTimeouts, TaskState, Transition

__all__ = [
    "IN_PROCESS_IDS",
    "SOURCE",
    "STATE_REFUSED",
    "on_approval",
    "on_decision",
    "on_result",
    "on_state_refused",
    "on_tick",
    "reuse_of",
    "start_task",
    "submission_digest",
]

SOURCE = "tidegate/planner"
STATE_REFUSED = "state_refused"  # the reason code of a task ended because its stored state was refused (`on_state_refused`)

MAX_STEPS = 25


# The ids of a run inside one process (what-if, evals), where nothing outside can propose; a service passes its own.
IN_PROCESS_IDS = ActionIds.throwaway()


def _bump(counts: ActionCounts, **delta: int) -> ActionCounts:
    return counts.model_copy(update={k: getattr(counts, k) + v for k, v in delta.items()})


def _with_step(state: TaskState, record: StepRecord, **update: Any) -> TaskState:
    steps = [record if s.step == record.step else s for s in state.steps]
    return state.model_copy(update={"steps": steps, **update})


def _fill_reason(value: Any, reason: str) -> Any:
    if isinstance(value, str):
        return value.replace("{reason}", reason)
    if isinstance(value, list):
        return [_fill_reason(v, reason) for v in value]
    if isinstance(value, dict):
        return {k: _fill_reason(v, reason) for k, v in value.items()}
    return value


def start_task(
    task: TaskSubmittedData,
    plan: list[PlannedStep],
    *,
    strategy: str,
    now: datetime,
    rates: CostRates,
    read_only: frozenset[str],
    dropped: list[str] | None = None,
    error: str | None = None,
    detail: str = "",
    ids: ActionIds = IN_PROCESS_IDS,
) -> Transition:
    """A new task: record it and propose its first step, or close it at once when it cannot be planned."""
    state = TaskState(
        task_id=task.task_id,
        tenant_id=task.tenant_id,
        workflow=task.workflow,
        mode=task.mode,
        requested_by=task.requested_by,
        budget_usd=task.budget_usd,
        strategy=strategy,
        plan=plan,
        dropped=dropped or [],
        started_at=now,
        events=1,
        submission=submission_digest(task),
    )
    if error:
        return _close(state, now, rates, failed=True, reason=error, why=detail)
    if not plan:
        return _close(state, now, rates, failed=True, reason="nothing_to_do", why="the strategy planned no catalogued action")
    return _advance(state, now, rates, read_only, ids)


def submission_digest(task: TaskSubmittedData) -> str:
    """What makes two submissions of a task id the same request: the SHA-256 of everything the client signed in it."""
    return digest(task.model_dump(mode="json"))


def reuse_of(state: TaskState, task: TaskSubmittedData) -> str | None:
    """Why `task` cannot be planned under an id its tenant already runs as `state`; None when it is the same submission again.

    A task id is its tenant's: the planner never plans a second request under one. Another requester's submission of the
    id, or the same requester's with another request (input, workflow, mode, budget), is refused, never swallowed. A
    state kept before the request's digest was (`submission` None) is compared by requester alone.
    """
    if task.requested_by != state.requested_by:
        return (
            f"task id {task.task_id!r} of tenant {task.tenant_id} is taken: {state.requested_by} submitted it first "
            f"(this submission is {task.requested_by}'s); submit the task under another id"
        )
    if state.submission is not None and state.submission != submission_digest(task):
        return (
            f"task id {task.task_id!r} of tenant {task.tenant_id} was submitted by {task.requested_by} before with another "
            "request (input, workflow, mode or budget); only the first is planned: submit this one under another id"
        )
    return None


def _advance(
    state: TaskState,
    now: datetime,
    rates: CostRates,
    read_only: frozenset[str],
    ids: ActionIds,
    *,
    repeats: StepRecord | None = None,
    why_again: str = "",
) -> Transition:
    """Propose the next planned step, or complete the task when none is left; `repeats`: the step it proposes again, and why."""
    if not state.plan:
        return _close(state, now, rates, failed=False)
    if len(state.steps) >= MAX_STEPS:
        return _close(state, now, rates, failed=True, reason="step_limit", why=f"more than {MAX_STEPS} steps")
    planned, rest = state.plan[0], state.plan[1:]
    step = len(state.steps) + 1
    rationale = f"{why_again} {planned.rationale}".strip() if why_again else planned.rationale
    record = StepRecord(
        step=step,
        action_id=ids.of(state.tenant_id, state.task_id, step),
        tool=planned.tool,
        args=planned.args,
        rationale=rationale,
        tainted_args=planned.tainted_args,
        read_only=planned.tool in read_only,
        waiting_since=now,
        repeats=repeats.action_id if repeats else None,
        proposals=repeats.proposals + 1 if repeats else 1,
        planned=planned,
    )
    data = ActionProposedData(
        action_id=record.action_id,
        task_id=state.task_id,
        tenant_id=state.tenant_id,
        step=step,
        tool=planned.tool,
        args=planned.args,
        rationale=rationale[:4000],
        proposer=f"{SOURCE}/{state.strategy}",
        tainted_args=planned.tainted_args,
        cost=planned.cost,
        mode=state.mode,
        requested_by=state.requested_by,
        budget_usd=state.budget_usd,
        confidence=planned.confidence,
        repeats=record.repeats,
    )
    new = state.model_copy(
        update={
            "plan": rest,
            "steps": [*state.steps, record],
            "status": "running",
            "counts": _bump(state.counts, proposed=1),
            "model_usd": state.model_usd + planned.cost.usd,
            "events": state.events + 1,
        }
    )
    return Transition(state=new, outbound=[Outbound(topic="actions.proposed", event=ActionProposed.build(data, source=SOURCE))])


def _close(state: TaskState, now: datetime, rates: CostRates, *, failed: bool, reason: str | None = None, why: str = "") -> Transition:
    """End the task with its summary and cost."""
    lines = [f"{s.tool} {s.status}" + (f" ({', '.join(s.reasons)})" if s.reasons and s.status != "succeeded" else "") for s in state.steps]
    summary = f"{state.workflow}: " + ("; ".join(lines) if lines else "no action")
    if failed:
        summary += f". Failed: {reason}" + (f" — {why}" if why else "")
    if state.dropped:
        summary += f". Dropped proposals (a name alone: not in the catalog): {', '.join(state.dropped)}"
    closed = state.model_copy(
        update={
            "status": "failed" if failed else "completed",
            "ended_at": now,
            "events": state.events + 1,
            "reason": reason,
            "summary": summary,
        }
    )
    duration_ms = max(0.0, (now - state.started_at).total_seconds() * 1000)
    data = TaskOutcomeData(
        task_id=state.task_id,
        tenant_id=state.tenant_id,
        workflow=state.workflow,
        status="failed" if failed else "completed",
        summary=summary[:4000],
        reason=reason,
        counts=closed.counts,
        cost=closed.cost(rates),
        duration_ms=duration_ms,
        human_touches=closed.human_touches,
    )
    event: Envelope = TaskFailed.build(data, source=SOURCE) if failed else TaskCompleted.build(data, source=SOURCE)
    return Transition(state=closed, outbound=[Outbound(topic="tasks.outcomes", event=event)])


def _unchanged(state: TaskState) -> Transition:
    return Transition(state=state, changed=False)


def _refused(
    state: TaskState, record: StepRecord, reason: str, now: datetime, rates: CostRates, read_only: frozenset[str], ids: ActionIds
) -> Transition:
    """A step was denied, rejected or expired: put its alternatives in front of the plan, or fail the task."""
    if record.planned.on_deny:
        # Re-plan: the alternatives replace what was left (a reply confirming a refund that was
        # denied would be wrong), so they carry every step the task still needs.
        text = _reason_text(record.reasons, record.reason_messages)
        alternatives = [s.model_copy(update={"args": _fill_reason(s.args, text)}) for s in record.planned.on_deny]
        return _advance(state.model_copy(update={"plan": alternatives}), now, rates, read_only, ids)
    if not record.planned.required:
        return _advance(state, now, rates, read_only, ids)
    return _close(state, now, rates, failed=True, reason=reason, why=f"{record.tool} was refused and has no alternative")


def _reason_text(codes: list[str], messages: list[str]) -> str:
    text = ", ".join(codes) or "no reason given"
    detail = "; ".join(m for m in messages if m)
    return f"{text} ({detail})" if detail else text


def on_decision(
    state: TaskState,
    decided: ActionDecidedData,
    now: datetime,
    rates: CostRates,
    read_only: frozenset[str],
    *,
    ids: ActionIds = IN_PROCESS_IDS,
) -> Transition:
    """Policy decided on one of our actions."""
    record = state.step_by_action(decided.action_id, decided.tenant_id)
    if record is None or state.status in ("completed", "failed"):
        return _unchanged(state)
    codes = [str(r.code) for r in decided.reasons]
    messages = [r.message for r in decided.reasons]
    base = {"decision": decided.outcome, "reasons": codes, "reason_messages": messages}
    events = state.events + 1
    if decided.outcome == "allow":
        if record.status in ("proposed", "escalated"):
            counts = _bump(state.counts, allowed=1)
            return Transition(
                state=_with_step(
                    state,
                    record.model_copy(update={**base, "status": "allowed", "waiting_since": now}),
                    counts=counts,
                    events=events,
                    status="running",
                )
            )
        # The result overtook the decision (topics are read in parallel); on_result already counted it as allowed.
        return Transition(state=state.model_copy(update={"events": events}))
    if decided.outcome == "escalate":
        if record.status != "proposed":
            return Transition(state=state.model_copy(update={"events": events}))
        new = _with_step(
            state,
            record.model_copy(update={**base, "status": "escalated", "waiting_since": None}),  # a human's wait: the approval expires
            counts=_bump(state.counts, escalated=1),
            events=events,
            status="waiting_human",
        )
        return Transition(state=new)
    # deny
    if record.status not in ("proposed", "escalated"):
        return Transition(state=state.model_copy(update={"events": events, "counts": _bump(state.counts, denied=1)}))
    denied = record.model_copy(update={**base, "status": "denied"})
    new = _with_step(state, denied, counts=_bump(state.counts, denied=1), events=events)
    return _refused(new, denied, codes[0] if codes else "no_permit", now, rates, read_only, ids)


def on_approval(
    state: TaskState,
    kind: str,
    approval: ApprovalData,
    now: datetime,
    rates: CostRates,
    read_only: frozenset[str],
    *,
    ids: ActionIds = IN_PROCESS_IDS,
) -> Transition:
    """A human (or the clock) decided on an escalated action of ours; `kind` is requested/granted/rejected/expired."""
    record = state.step_by_action(approval.action_id, approval.tenant_id)
    if record is None or state.status in ("completed", "failed"):
        return _unchanged(state)
    events = state.events + 1
    if kind == "requested":
        return Transition(state=_with_step(state, record.model_copy(update={"approval_id": approval.approval_id}), events=events))
    touches = max(1, len(approval.approvers)) if kind in ("granted", "rejected") else 0
    if kind == "granted":
        # The policy service re-decides and authorizes; the step waits for that decision.
        return Transition(
            state=_with_step(
                state,
                record.model_copy(
                    update={"approval_id": approval.approval_id, "waiting_since": now, "approved_args": approval.edited_args}
                ),
                counts=_bump(state.counts, approved=1),
                events=events,
                human_touches=state.human_touches + touches,
            )
        )
    if record.status != "escalated":
        return Transition(state=state.model_copy(update={"events": events, "human_touches": state.human_touches + touches}))
    code = "approval_rejected" if kind == "rejected" else "approval_expired"
    refused = record.model_copy(
        update={"status": kind, "approval_id": approval.approval_id, "reasons": [code], "reason_messages": [approval.comment or ""]}
    )
    new = _with_step(
        state,
        refused,
        counts=_bump(state.counts, **{kind: 1}),
        events=events,
        human_touches=state.human_touches + touches,
        status="running",
    )
    return _refused(new, refused, code, now, rates, read_only, ids)


def on_result(
    state: TaskState,
    result: ActionResultData,
    now: datetime,
    rates: CostRates,
    read_only: frozenset[str],
    *,
    ids: ActionIds = IN_PROCESS_IDS,
    proposals_again: int = 2,
) -> Transition:
    """The executor performed (or tried) one of our actions, or refused its authorization before any call.

    `proposals_again`: how many times a step whose authorization expired unused is proposed again before the task fails.
    """
    record = state.step_by_action(result.action_id, result.tenant_id)
    if record is None or state.status in ("completed", "failed") or record.status in ("succeeded", "failed", "unknown", "refused"):
        return _unchanged(state)
    attempts = max(result.attempts, 1)
    first = result.cost.usd / attempts
    extra = result.cost.usd - first
    costs = {
        "retrieval_usd": state.retrieval_usd + (first if record.read_only else 0.0),
        "tools_usd": state.tools_usd + (0.0 if record.read_only else first),
        "retries_usd": state.retries_usd + extra,
    }
    error = f"{result.error.type}: {result.error.message}" if result.error else None
    refusal = result.refusal  # no call was made: not a tool's failure
    status = "refused" if refusal is not None else result.status
    update: dict[str, Any] = {"status": status, "attempts": result.attempts, "cost_usd": result.cost.usd, "result": result.result}
    if refusal is not None:
        update |= {"reasons": [refusal], "reason_messages": [result.error.message if result.error else ""]}
    delta: dict[str, int] = {status: 1}
    if record.status == "proposed":
        # Only an allowed action runs: the result overtook its decision, which will then only be recorded.
        update["decision"] = "allow"
        delta["allowed"] = 1
    done = record.model_copy(update={**update, "error": error})
    new = _with_step(state, done, counts=_bump(state.counts, **delta), events=state.events + 1, status="running", **costs)
    if refusal is not None:
        return _after_refusal(new, done, refusal, str(error), now, rates, read_only, ids, proposals_again)
    if result.status == "succeeded" or (result.status == "failed" and record.planned.continue_on_failure):
        return _advance(new, now, rates, read_only, ids)
    if result.status == "failed":
        return _close(new, now, rates, failed=True, reason="tool_failed", why=f"{record.tool}: {error}")
    return _close(new, now, rates, failed=True, reason="outcome_unknown", why=f"{record.tool} may or may not have run; a human follows up")


def _after_refusal(
    state: TaskState,
    record: StepRecord,
    refusal: str,
    error: str,
    now: datetime,
    rates: CostRates,
    read_only: frozenset[str],
    ids: ActionIds,
    proposals_again: int,
) -> Transition:
    """The executor refused a step's authorization before making any call: propose it again, move on, or fail naming the refusal.

    Only an expiry is proposed again (the executor was down, restarting or behind longer than an authorization lives:
    the call was governed and never made), as a new action (the executor's record closed the old id for good) that
    policy decides afresh: a call a human approved is escalated again, so a person is asked again. A kill switch,
    args the executor's catalog refuses or an unknown tool would be refused again: they end the step at once.
    """
    if refusal == ReasonCode.AUTHORIZATION_EXPIRED and record.proposals <= proposals_again:
        # The call a human granted is the one proposed again, with the args they edited, if they did.
        planned = record.planned.model_copy(update={"args": record.approved_args if record.approved_args is not None else record.args})
        why = (
            f"Proposed again ({record.proposals + 1} of {proposals_again + 1}): the authorization of {record.action_id} expired "
            f"before any executor ran it ({error}); no call was made, so policy decides afresh"
            + (f" and a person is asked again (the approval {record.approval_id} could not be carried out)." if record.approval_id else ".")
        )
        plan = [planned, *state.plan]
        return _advance(state.model_copy(update={"plan": plan}), now, rates, read_only, ids, repeats=record, why_again=why)
    if record.planned.continue_on_failure:
        return _advance(state, now, rates, read_only, ids)
    why = f"{record.tool}: the executor refused the call before making it ({error})"
    if refusal == ReasonCode.AUTHORIZATION_EXPIRED:
        why += (
            f"; proposed {record.proposals} time(s), each authorization expired before an executor ran it: the executor was "
            "down or behind longer than authorizations live (docs/operations.md)"
        )
    return _close(state, now, rates, failed=True, reason=refusal, why=why)


def on_state_refused(
    task_id: str, tenant_id: str, why: str, now: datetime, rates: CostRates, *, task: TaskSubmittedData | None = None
) -> Transition:
    """End a task whose stored state the planner refused (its proof failed: `why`), from what a signed event proves of it.

    Nothing of the refused state is used: the task is closed failed `state_refused` under the task id and tenant the
    event names (`task`: the submission itself, when it is the event), with no plan, no steps and nothing proposed, so
    the requester is told rather than left waiting, and the closed state written in its place is the planner's own.
    """
    state = TaskState(
        task_id=task_id,
        tenant_id=tenant_id,
        workflow=task.workflow if task else "unknown",
        mode=task.mode if task else "draft",
        requested_by=task.requested_by if task else "unknown",
        budget_usd=task.budget_usd if task else None,
        strategy="none",
        started_at=now,
        submission=submission_digest(task) if task else None,
    )
    why = f"the planner's stored state of the task was refused ({why}): nothing was proposed from it; resubmit it under a new id"
    return _close(state, now, rates, failed=True, reason=STATE_REFUSED, why=why)


def on_tick(
    state: TaskState, now: datetime, rates: CostRates, timeouts: StepTimeouts, *, listening_since: datetime | None = None
) -> Transition:
    """The clock moved on: close the task whose current step waited too long for a decision or a result.

    The step is marked `timed_out` and the task fails with reason `step_timeout`; an answer that
    arrives later changes nothing (the task is closed). An allowed step may still have run: the
    summary says so, as for an unknown outcome. `listening_since`: when this planner started reading the bus; a step
    waits from then at the earliest (an answer published while no planner ran, or since a restored backup, is read
    after the start: a step is not failed before it could be).
    """
    record = state.current
    if state.status in ("completed", "failed") or record is None or record.waiting_since is None:
        return _unchanged(state)
    if record.status not in ("proposed", "allowed", "escalated"):  # escalated with a wait: granted, the re-decision is due
        return _unchanged(state)
    limit = timeouts.of(record.tool)
    waited = now - max(record.waiting_since, listening_since or record.waiting_since)
    if waited < limit:
        return _unchanged(state)
    missing = "a result" if record.status == "allowed" else "a decision"
    why = f"{record.tool} got no {missing.split()[1]} in {limit.total_seconds():.0f} s"
    if missing == "a result":
        why += "; it may or may not have run"
    code = ReasonCode.STEP_TIMEOUT.value
    timed_out = record.model_copy(update={"status": "timed_out", "reasons": [code], "reason_messages": [f"no {missing} after {waited}"]})
    new = _with_step(state, timed_out, events=state.events + 1)
    return _close(new, now, rates, failed=True, reason=code, why=why)
