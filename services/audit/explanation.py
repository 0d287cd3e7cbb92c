"""A task's explanation: what `tidegate audit explain` (and `audit actions`, a line per action) tells of one task.

Its request and sources, each action's decisions, approvals (and how each approver was proven), authorization and
whether it binds what was approved, the calls that ran, costs and dead letters: `explain`, a pure function of the
task's rows, and `explain_task`, which reads them from an `AuditLog`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

import schemas as s
from servicekit.authority import LOG_APPEND_TIME
from servicekit.unreadable import Skipped
from services.audit._standing import FOLLOW_UP_PENDING, TaskStatus, standing
from services.audit.dead_letter_records import named_record_problem
from services.audit.reading import decoded, task_rows_of, unreadable
from services.audit.repository import AuditLog
from services.audit.rows import LogRow
from services.audit.signature_check import Recheck

__all__ = [
    "FOLLOW_UP_PENDING",
    "ActionStory",
    "ApprovalStep",
    "Costs",
    "DeadLetter",
    "Decision",
    "Explanation",
    "LateReply",
    "ToolCall",
    "explain",
    "explain_task",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Decision(_Frozen):
    """One policy decision on an action, with everything that explains it."""

    at: datetime
    outcome: str
    reasons: list[s.Reason]
    policy_version: str
    risk: str | None
    facts: dict[str, Any]
    via: str
    approval_id: str | None
    latency_ms: float


class ApprovalStep(_Frozen):
    """A request for a human decision, or the decision."""

    at: datetime
    status: str
    approval_id: str
    approver: str | None
    approvers: list[str]
    comment: str | None
    decided_at: datetime | None
    edited_args: dict[str, Any] | None
    reasons: list[s.Reason]
    resolution: str | None = None  # a follow-up of an unknown outcome: what the human found
    requested_by: str | None = Field(
        default=None,
        description="The requester the approval names as its proposal gave it (an outside agent's proposal: the agent); never an approver.",
    )
    task_requested_by: str | None = Field(
        default=None,
        description="The task's requester as its signed request named them, when the policy service had learned the task; never an "
        "approver either.",
    )
    expires_at: datetime | None = Field(default=None, description="When the request expires unanswered (fail closed).")
    source: str | None = Field(default=None, description="The service that published the step: an expiry is the approval service's.")
    action_digest: str | None = Field(default=None, description="The digest of the exact call the request, and any grant, binds to.")
    review_reason: str | None = Field(
        default=None, description="Why the approver rejected or edited the call: a code of the tenant's taxonomy (`wrong_recipient`)."
    )
    credentials: dict[str, s.ApprovalCredential | None] = Field(
        default_factory=dict,
        description="A decision's approvers (those it counts, or who decided) → the credential their signed vote names: its kind, id "
        "and issuer (null: a vote recorded before Tidegate named it). Empty for a request, an expiry and a decision without votes.",
    )


def _credentials(d: s.ApprovalData) -> dict[str, s.ApprovalCredential | None]:
    """Who a decision names → the credential of their counted vote (the last one), as the signed votes say."""
    named = set(d.approvers) | ({d.approver} if d.approver else set())
    return {v.approver: v.credential for v in d.votes if v.counted and v.approver in named}


class ToolCall(_Frozen):
    """What the executor did with an authorized call."""

    at: datetime
    status: str
    result: dict[str, Any] | None
    error: s.ErrorInfo | None
    attempts: int
    duration_ms: float
    cost_usd: float


class LateReply(_Frozen):
    """A tool service's reply the executor did not take: after it gave up on the call, or to an attempt it no longer waited for.

    Of a call that ended `unknown` or `failed`, it is the evidence of what the call did.
    """

    at: datetime = Field(description="When the broker appended the reply (the audit row's Kafka time).")
    attempt: int = Field(description="The attempt it answers.")
    ok: bool
    result: dict[str, Any] | None = None
    error: s.ErrorInfo | None = None
    after_end: bool = Field(
        description="Recorded after the executor's result of the action: it had given up. False: before it, to an attempt the "
        "executor had stopped waiting for."
    )


class ActionStory(_Frozen):
    """Everything about one proposed action."""

    action_id: str
    step: int | None = None
    tool: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    proposer: str | None = None
    signed_by: str | None = Field(
        default=None,
        description="Whose key signed the proposal (its key id's name: `planner`, a client such as `demo@acme.example`): the "
        "`proposer` is what the producer typed, this is who it was.",
    )
    rationale: str = ""
    proposed_at: datetime | None = Field(
        default=None, description="When the broker appended its proposal (its producer's clock on a topic the broker does not stamp)."
    )
    decided_after_s: float | None = Field(
        default=None,
        description="Seconds from its proposal's append to its first decision's, both by the broker's clock where it stamps them: "
        "time it waited (inputs held, a backlog, the database away), beside `latency_ms`, the decision's own time.",
    )
    tainted_args: list[str] = Field(default_factory=list)
    proposal_cost: s.ProposalCost | None = None
    decisions: list[Decision] = Field(default_factory=list)
    approvals: list[ApprovalStep] = Field(default_factory=list)
    authorization: s.Authorization | None = None
    calls: list[ToolCall] = Field(default_factory=list)
    late_replies: list[LateReply] = Field(
        default_factory=list,
        description="Replies of an outside tool service the executor did not take, of a call that did not end `succeeded`.",
    )
    follow_up: str | None = Field(
        default=None,
        description="Of a call that ended `unknown`: `pending` until an `approval.resolved` says what a human found, then its "
        "resolution (the approval service opens the follow-up off the bus: docs/approval.md).",
    )
    bound: bool | None = Field(
        default=None,
        description="Whether the authorization the executor ran is for exactly the call the policy allowed or the human granted "
        "(its digest recomputed from the proposal's args, or the approver's edit); None: not authorized.",
    )
    binding: str | None = Field(default=None, description="`bound` said for a person: which call, whose grant, which digest.")


def _binding(a: dict[str, Any], authorized: tuple[str, str], proposal: tuple[str, str] | None) -> tuple[bool, str]:
    """Whether the authorization's digest is the call that was allowed or granted, and how that reads (auditor3 F4).

    "What exactly ran" is the authorized call (the executor runs nothing else); what a human approved is the grant's
    digest, of the proposed call, and the approver's edit when there was one. Recomputed here from the signed values:
    the proposal's own tenant, tool and args (`proposal`), never the authorization's, which are what is being checked.
    """
    auth: s.Authorization = a["authorization"]
    if proposal is None:
        return False, f"the log holds no proposal of this action: authorized for {authorized[1]}, a call nobody proposed here"
    tenant_id, tool = proposal
    proposed = s.action_digest(tenant_id, tool, a.get("args") or {})
    if authorized != proposal:
        return False, f"the authorization is for {authorized[1]} of tenant {authorized[0]}, not the proposed {tool} of tenant {tenant_id}"
    if auth.via != "approval":
        if auth.action_digest == proposed:
            return True, f"the authorization is for exactly the call as proposed (digest {auth.action_digest[:16]}…)"
        return False, f"the authorization's digest {auth.action_digest[:16]}… is not the proposed call's ({proposed[:16]}…)"
    grant = next((ap for ap in a["approvals"] if ap.status == "granted" and ap.approval_id == auth.approval_id), None)
    if grant is None:
        return False, f"authorized via approval {auth.approval_id}, but the log holds no grant of it for this action"
    who = ", ".join(grant.approvers or ([grant.approver] if grant.approver else [])) or "nobody named"
    if grant.action_digest != proposed:
        return False, f"the grant by {who} binds to digest {str(grant.action_digest)[:16]}…, not the proposed call's ({proposed[:16]}…)"
    if grant.edited_args is None:
        expected, what = proposed, f"the call {who} granted"
    else:
        expected, what = s.action_digest(tenant_id, tool, grant.edited_args), f"the call as {who} edited it"
    if auth.action_digest == expected:
        return True, f"the authorization is for exactly {what} (approval {auth.approval_id}, digest {auth.action_digest[:16]}…)"
    return (
        False,
        f"the authorization's digest {auth.action_digest[:16]}… is not {what} ({expected[:16]}…): what ran is not what was approved",
    )


class DeadLetter(_Frozen):
    """A record of the task that a service (or the contract) refused."""

    at: datetime
    topic: str
    partition: int
    offset: int
    code: str
    error: str
    service: str


class Costs(_Frozen):
    """What the task cost: as reported by its outcome when it has one, else summed from its events."""

    model_usd: float
    tools_usd: float
    reported: s.TaskCost | None
    total_usd: float


class Explanation(_Frozen):
    """The explainability artifact of one task: sources, policies, tools, approvals, costs."""

    task_id: str
    tenant_id: str | None
    workflow: str | None
    requested_by: str | None
    mode: str | None
    status: TaskStatus = Field(
        description="From the task's outcome when it has one. A task no outcome will ever close (proposed by a client, or "
        "planned outside Tidegate): `ended` when every action ended, else `open` (a call whose outcome is unknown is open "
        "until a human resolves its follow-up); `summary` then counts its actions."
    )
    summary: str | None = Field(
        description="The outcome's summary (with the follow-ups still pending, if any), else what the actions' ends say."
    )
    follow_ups_pending: int = Field(
        default=0, description="Calls that ended `unknown` with no `approval.resolved` yet: a human follows each up."
    )
    submitted_at: datetime | None
    ended_at: datetime | None
    sources: dict[str, Any]
    untrusted_fields: list[str]
    actions: list[ActionStory]
    policy_versions: list[str]
    costs: Costs
    dead_letters: list[DeadLetter]
    skipped: dict[str, int] = Field(
        default_factory=dict, description="Records that hold no usable event, by reason (they are listed among the dead letters)."
    )
    records: int
    trace_ids: list[str]
    unverified: list[str] | None = Field(
        default=None,
        description="Rows of the task that do not verify from their own value (signature, columns read from it), each named; "
        "empty when every row does; None when the rows were not checked.",
    )


def explain(task_id: str, rows: Sequence[LogRow]) -> Explanation:
    """Build the explanation of `task_id` from its rows (story order), rows of one tenant's task (`task_rows_of`).

    Its request is the task's first submission: a later one under the same id is not what runs (the planner refuses
    another request as `task_id_reused`, and its dead letter is listed).
    """
    submitted: s.TaskSubmittedData | None = None
    submitted_at = ended_at = None
    outcome: s.TaskOutcomeData | None = None
    actions: dict[str, dict[str, Any]] = {}
    dead: list[DeadLetter] = []
    traces: list[str] = []
    skipped = Skipped()
    requesters: list[str] = []  # of a task with no `task.submitted`: as its proposals, decisions and approvals name them
    modes: list[str] = []

    replies: dict[str, list[tuple[str, LateReply]]] = {}  # every reply of an outside tool service, by action: late ones are kept below
    authorized: dict[str, tuple[str, str]] = {}  # action id -> the tenant and tool its authorization names
    proposals: dict[str, tuple[str, str]] = {}  # action id -> the tenant and tool its proposal names

    def action(action_id: str) -> dict[str, Any]:
        return actions.setdefault(action_id, {"action_id": action_id, "decisions": [], "approvals": [], "calls": []})

    for row in rows:
        if row.duplicate:
            continue
        if row.trace_id and row.trace_id not in traces:
            traces.append(row.trace_id)
        bad = unreadable(row)
        event = decoded(row) if bad is None else None
        if event is None:
            reason = bad.reason if bad is not None else "invalid_event"
            skipped.add(reason)
            dead.append(
                DeadLetter(
                    at=row.kafka_ts, topic=row.topic, partition=row.partition, offset=row.kafka_offset, code=reason,
                    error=bad.detail if bad is not None else (row.invalid_reason or ""),
                    service="audit (recorded as not valid)" if not row.valid else "explain (not a usable event)",
                )
            )  # fmt: skip
            continue
        d = event.data
        match event:
            case s.TaskSubmitted():
                if submitted is None:
                    submitted, submitted_at = d, event.time
            case s.ActionProposed():
                _note(requesters, d.requested_by)
                _note(modes, d.mode)
                a = action(d.action_id)
                proposals[d.action_id] = (d.tenant_id, d.tool)
                a.update(
                    step=d.step, tool=d.tool, args=d.args, proposer=d.proposer, rationale=d.rationale, signed_by=_signer(event.keyid),
                    tainted_args=d.tainted_args, proposal_cost=d.cost,
                )  # fmt: skip
                a.setdefault("proposed_at", _appended(row, event))
            case s.ActionDecided():
                _note(requesters, d.requested_by)
                a = action(d.action_id)
                if not a["decisions"] and a.get("proposed_at") is not None:
                    a["decided_after_s"] = (_appended(row, event) - a["proposed_at"]).total_seconds()
                a.setdefault("tool", d.tool)
                a.setdefault("args", d.args)
                a["decisions"].append(
                    Decision(
                        at=event.time, outcome=d.outcome, reasons=d.reasons, policy_version=d.policy_version,
                        risk=d.risk.value if d.risk else None, facts=d.facts, via=d.via, approval_id=d.approval_id,
                        latency_ms=d.latency_ms,
                    )
                )  # fmt: skip
            case s.ApprovalRequested() | s.ApprovalGranted() | s.ApprovalRejected() | s.ApprovalExpired() | s.ApprovalResolved():
                _note(requesters, d.requested_by)
                action(d.action_id)["approvals"].append(
                    ApprovalStep(
                        at=event.time, status=event.type.rsplit(".", 1)[-1], approval_id=d.approval_id, approver=d.approver,
                        approvers=d.approvers, comment=d.comment, decided_at=d.decided_at, edited_args=d.edited_args,
                        reasons=d.reasons, resolution=d.resolution, requested_by=d.requested_by, expires_at=d.expires_at,
                        source=event.source, task_requested_by=d.task_requested_by, action_digest=d.action_digest,
                        review_reason=d.review_reason, credentials=_credentials(d),
                    )
                )  # fmt: skip
            case s.ActionAuthorized():
                action(d.action_id)["authorization"] = d.authorization
                authorized[d.action_id] = (d.tenant_id, d.tool)
            case s.ActionSucceeded() | s.ActionFailed() | s.ActionUnknown():
                action(d.action_id)["calls"].append(
                    ToolCall(
                        at=event.time, status=d.status, result=d.result, error=d.error, attempts=d.attempts,
                        duration_ms=d.duration_ms, cost_usd=d.cost.usd,
                    )
                )  # fmt: skip
            case s.ToolReply():  # rows come in Kafka-time order: a result already read means the executor had given up
                ended = bool(actions.get(d.action_id, {}).get("calls"))
                replies.setdefault(d.action_id, []).append(
                    (d.tool, LateReply(at=row.kafka_ts, attempt=d.attempt, ok=d.ok, result=d.result, error=d.error, after_end=ended))
                )
            case s.TaskCompleted() | s.TaskFailed():
                outcome, ended_at = d, event.time
            case s.EventRejected():
                dead.append(
                    DeadLetter(
                        at=event.time, topic=d.topic, partition=d.partition, offset=d.offset, code=d.code,
                        error=d.error, service=d.service,
                    )
                )  # fmt: skip
            case _:
                pass

    for action_id, a in actions.items():
        if action_id in authorized:
            a["bound"], a["binding"] = _binding(a, authorized[action_id], proposals.get(action_id))
        if a["calls"] and a["calls"][-1].status != "succeeded":
            # Not taken: any reply after the executor's result, and an ok one before it (taken, it would have succeeded).
            # An error before the result is the one the executor took (or retried after): the call's own error says it.
            a["late_replies"] = [r for tool, r in replies.get(action_id, []) if tool == a.get("tool") and (r.after_end or r.ok)]
        if a["calls"] and a["calls"][-1].status == "unknown":
            found = [ap.resolution for ap in a["approvals"] if ap.status == "resolved" and ap.resolution]
            a["follow_up"] = found[-1] if found else "pending"
    stories = sorted((ActionStory(**a) for a in actions.values()), key=lambda a: (a.step is None, a.step or 0, a.action_id))
    model_usd = sum(a.proposal_cost.usd for a in stories if a.proposal_cost)
    tools_usd = sum(c.cost_usd for a in stories for c in a.calls)
    versions = sorted({d.policy_version for a in stories for d in a.decisions})
    tenant = submitted.tenant_id if submitted else next((r.tenant_id for r in rows if r.tenant_id), None)
    status, summary = standing(submitted, outcome, stories)
    return Explanation(
        task_id=task_id,
        tenant_id=tenant,
        workflow=submitted.workflow if submitted else (outcome.workflow if outcome else None),
        requested_by=submitted.requested_by if submitted else (", ".join(requesters) or None),
        mode=submitted.mode if submitted else (", ".join(modes) or None),
        status=status,
        summary=summary,
        follow_ups_pending=sum(1 for a in stories if a.follow_up == "pending"),
        submitted_at=submitted_at,
        ended_at=ended_at,
        sources=submitted.input if submitted else {},
        untrusted_fields=submitted.untrusted if submitted else [],
        actions=stories,
        policy_versions=versions,
        costs=Costs(
            model_usd=model_usd,
            tools_usd=tools_usd,
            reported=outcome.cost if outcome else None,
            total_usd=outcome.cost.total if outcome else model_usd + tools_usd,
        ),
        dead_letters=dead,
        skipped=dict(skipped.counts),
        records=len(rows),
        trace_ids=traces,
    )


def _note(seen: list[str], value: str | None) -> None:
    if value and value not in seen:
        seen.append(value)


def _appended(row: LogRow, event: s.Envelope) -> datetime:
    """When `row` reached the bus.

    The broker's append time where it stamps the topic (every catalog topic), one clock for every producer; else the
    event's own time (its producer's clock).
    """
    return row.kafka_ts if row.ts_type == LOG_APPEND_TIME else event.time


async def explain_task(
    log: AuditLog, task_id: str, prefix: str = "", *, tenant: str | None = None, recheck: Recheck | None = None
) -> Explanation:
    """Read one tenant's task's rows (in the deployment `prefix`) and explain it (`task_rows_of`: never two tenants' mixed).

    With `recheck` (`signature_check.signature_recheck`), each row is observed again from its own value first, and those
    whose signature or columns say otherwise are named in `unverified`: a row edited in the database is not told as fact
    without a word (auditor1 F4). The chain's hashes are `verify`'s to check.
    """
    rows = await task_rows_of(log, task_id, prefix, tenant=tenant)
    explanation = explain(task_id, rows)
    if recheck is None:
        return explanation
    unverified = [f"{row.topic}[{row.partition}] seq {row.seq} (offset {row.kafka_offset}): {problem}"
                  for row in rows if (problem := recheck(row) or await _dead_letter_lie(log, row)) is not None]  # fmt: skip
    return explanation.model_copy(update={"unverified": unverified})


async def _dead_letter_lie(log: AuditLog, row: LogRow) -> str | None:
    """Why a dead letter of the task is not the refusal of the record at the position it names (None: it is, or not one).

    Its signature says only who wrote it: a stolen key signs one that names another record's position (review61 F7).
    """
    if not row.valid or row.duplicate or row.event_type != "tidegate.event.rejected":
        return None
    event = decoded(row)
    if not isinstance(event, s.EventRejected):
        return None
    d = event.data
    problem = named_record_problem(d, await log.row_at(d.topic, d.partition, d.offset))
    return None if problem is None else f"a dead letter whose record is not the one it names: {problem}"


def _signer(keyid: str | None) -> str | None:
    """The name a key id (`<name>-<12 hex>`, `servicekit.signing.key_id_of`) names."""
    return None if not keyid else re.sub(r"-[0-9a-f]{12}$", "", keyid)
