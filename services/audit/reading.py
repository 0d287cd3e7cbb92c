"""Reading the audit log: what event a row holds, a task's story, search, and a task's rows, as pure functions over rows.

`tidegate audit show|search` are thin over these; a task's explanation (`explain`) is `services/audit/explanation.py`'s.
Replay and cost reports can reuse them with any `AuditLog` (PostgreSQL or the in-memory twin).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer

import schemas as s
from servicekit.unreadable import Unreadable, read_event
from services.audit._tenant_changes import RowId, previous_settings, row_id, settings_change
from services.audit.repository import AuditLog, SearchFilters
from services.audit.rows import LogRow
from services.audit.signature_check import Recheck

__all__ = [
    "SeveralTenants",
    "StoryLine",
    "decoded",
    "event_of",
    "search",
    "story",
    "summarize",
    "task_rows_of",
    "tasks_of_action",
    "tenants_of",
    "unreadable",
]


def event_of(row: LogRow) -> Any | None:
    """The typed event a valid row holds, else None (also for a value with NaN or Infinity: see `unreadable`)."""
    return None if unreadable(row) is not None else decoded(row)


def decoded(row: LogRow) -> Any | None:
    """The event a row's value holds when the row is valid, else None: `event_of` less its check for NaN and size (`unreadable`)."""
    if not row.valid or row.value is None:
        return None
    try:
        return read_event(None, row.value)
    except Unreadable:
        return None


def unreadable(row: LogRow) -> Unreadable | None:
    """Why a row holds no usable event (invalid JSON, wrong shape, unknown type, NaN, too large or deep), else None."""
    if row.value is None:
        return Unreadable("invalid_event", row.invalid_reason or "the record has no value")
    try:
        read_event(None, row.value)
    except Unreadable as exc:
        return exc
    if not row.valid:  # readable as some event, but not one its topic carries
        return Unreadable("invalid_event", row.invalid_reason or "not an event of its topic")
    return None


# --- the story of a task ----------------------------------------------------------------------


class StoryLine(BaseModel):
    """One line of `tidegate audit show`: when, where, what, who."""

    model_config = ConfigDict(frozen=True)

    at: datetime
    topic: str
    partition: int
    offset: int
    seq: int
    event_type: str
    source: str
    tenant_id: str | None
    task_id: str | None
    summary: str
    valid: bool
    duplicate: bool
    unverified: str | None = Field(
        default=None,
        description="Why the row does not verify from its own value (its signature or columns say otherwise: a row written "
        "into the database, not recorded from the bus), when the reader checked; what it says is then not evidence.",
    )
    dead_letter: s.EventRejectedData | None = Field(
        default=None,
        description="For a dead letter (`event.rejected`): what was refused, as the service wrote it: the original topic, "
        "partition, offset and key, the raw value (to 64 KiB, `truncated`, its full `size` and `sha256`), the reason `code` "
        "and `error`, and the `service`: what the on-call needs to see what was lost and to send it again.",
    )

    @field_serializer("at", when_used="json")
    def _at(self, at: datetime) -> str:
        """Always to the microsecond, in UTC: a whole second keeps its `.000000`, so the times sort as text."""
        return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _money(usd: float) -> str:
    return f"${usd:.4f}" if usd < 1 else f"${usd:.2f}"


def summarize(row: LogRow, event: Any | None = None, previous: Mapping[RowId, dict[str, Any] | None] | None = None) -> str:
    """One readable sentence for a row; a tenant's settings record as a change from `previous` (`previous_settings`)."""
    event = event if event is not None else event_of(row)
    if event is None:
        return f"not a valid event ({row.invalid_reason or 'unknown reason'})"
    d = event.data
    match event:
        case s.TaskSubmitted():
            untrusted = f"; untrusted: {', '.join(d.untrusted)}" if d.untrusted else ""
            return f"task submitted by {d.requested_by}: workflow {d.workflow}, mode {d.mode}{untrusted}"
        case s.ActionProposed():
            taint = f"; tainted: {', '.join(d.tainted_args)}" if d.tainted_args else ""
            undoes = f"; undoes {d.undoes}" if d.undoes else ""
            return f"step {d.step}: {d.proposer} proposes {d.tool}({json.dumps(d.args, sort_keys=True)}){taint}{undoes}"
        case s.ActionDecided():
            codes = ", ".join(r.code for r in d.reasons) or "-"
            via = f" after approval {d.approval_id}" if d.via == "approval" else ""
            return f"policy {d.policy_version[:19]}: {d.outcome.upper()} {d.tool} ({codes}){via}"
        case s.ApprovalRequested():
            return f"approval {d.approval_id} requested for {d.tool} (expires {d.expires_at:%Y-%m-%d %H:%M:%S}Z)"
        case s.ApprovalGranted() | s.ApprovalRejected() | s.ApprovalExpired() | s.ApprovalResolved():
            verb = event.type.rsplit(".", 1)[-1]
            found = f" ({d.resolution})" if d.resolution else ""
            who = f" by {', '.join(d.approvers) or d.approver}" if (d.approver or d.approvers) else ""
            comment = f": {d.comment}" if d.comment else ""
            reason = f" [{d.review_reason}]" if d.review_reason else ""
            return f"approval {d.approval_id} {verb}{found}{who}{reason}{comment}"
        case s.ActionAuthorized():
            a = d.authorization
            return f"{d.tool} authorized via {a.via} (key {a.key_id}, expires {a.expires_at:%H:%M:%S}Z)"
        case s.ActionSucceeded() | s.ActionFailed() | s.ActionUnknown():
            err = f": {d.error.type}: {d.error.message}" if d.error else ""
            return f"{d.tool} {d.status} after {d.attempts} attempt(s), {d.duration_ms:.0f} ms, {_money(d.cost.usd)}{err}"
        case s.TaskCompleted() | s.TaskFailed():
            return f"task {d.status}: {d.summary} (total {_money(d.cost.total)})"
        case s.EventRejected():
            return f"dead-lettered by {d.service} from {d.topic}[{d.partition}]@{d.offset}: {d.code}: {d.error[:200]}"
        case s.ControlKillswitch():
            because = f": {d.reason}" if d.reason else ""
            return f"kill switch {'SET' if d.active else 'cleared'} on tool={d.tool} tenant={d.tenant_id} by {d.set_by}{because}"
        case s.ControlBudget():
            return f"budget of tenant {d.tenant_id} set to {d.limit_usd!r} USD by {d.set_by}"
        case s.ControlTenant():
            if previous is not None and row_id(row) in previous:
                return f"tenant {settings_change(d.tenant_id, d.settings, previous[row_id(row)], d.set_by)}"
            return f"tenant {d.tenant_id} settings (before unknown) by {d.set_by}: {json.dumps(d.settings, sort_keys=True)}"
        case s.ControlRedrive():
            return (
                f"dead letter {d.dead_letter_id} ({d.code}, by {d.service}) redriven by {d.set_by} "
                f"to {d.topic}, original [{d.partition}]@{d.offset}: {d.reason[:200]}"
            )
        case s.ControlConnectorGrant():
            return f"connector grant {d.connector} of tenant {d.tenant_id} made current by {d.set_by} (sha256 {d.grant_sha256[:12]}…)"
        case s.ControlPolicy():
            return f"policy {d.version[:19]} published by {d.published_by} ({len(d.files)} file(s))"
        case s.DirectoryUpdated():
            onboards = ", onboarding it" if d.onboards else ""
            entries = ", ".join(f"{name} {len(values)}" for name, values in d.directory.model_dump().items() if values) or "empty"
            return f"directory of tenant {d.tenant_id} replaced by {d.set_by}{onboards} ({entries})"
        case s.DirectoryEndpoint():
            return f"webhook endpoint {d.endpoint_id} of tenant {d.tenant_id} made current by {d.set_by} (sha256 {d.row_sha256[:12]}…)"
        case s.DirectoryTokenRevoked() | s.ControlTokenRevoked():
            return f"approver token {d.token_id} of tenant {d.tenant_id} revoked by {d.set_by}"
        case s.ToolInvocation():
            return f"{d.tool} invoked over Kafka (attempt {d.attempt})"
        case s.ToolReply():
            return f"{d.tool} replied {'ok' if d.ok else 'error'}"
    return str(event.type)


def story(rows: Sequence[LogRow], previous: Mapping[RowId, dict[str, Any] | None] | None = None) -> list[StoryLine]:
    """Rows as story lines, in the order given (story order from the repository); `previous` as `summarize` takes it."""
    lines = []
    for row in rows:
        event = event_of(row)
        lines.append(
            StoryLine(
                at=row.kafka_ts,
                topic=row.topic,
                partition=row.partition,
                offset=row.kafka_offset,
                seq=row.seq,
                event_type=(row.event_type or "?").removeprefix("tidegate."),
                source=event.source if event is not None else "?",
                tenant_id=row.tenant_id,
                task_id=row.task_id,
                summary=summarize(row, event, previous),
                valid=row.valid,
                duplicate=row.duplicate,
                dead_letter=event.data if isinstance(event, s.EventRejected) else None,
            )
        )
    return lines


class SeveralTenants(LookupError):
    """A task id several tenants have records of, asked for without saying whose: each tenant's is another task."""

    def __init__(self, task_id: str, tenants: list[str]) -> None:
        super().__init__(f"task id {task_id!r} is used by {len(tenants)} tenants: {', '.join(tenants)}; say whose (--tenant)")
        self.task_id = task_id
        self.tenants = tenants


# A row naming no tenant: a record whose tenant could not be read, or the dead letter of one (`EventRejectedData`'s
# `tenant_id` is then `unknown`).
_NO_TENANT = (None, "", "unknown")


def tenants_of(rows: Sequence[LogRow]) -> list[str]:
    """The tenants rows name, in order of first appearance."""
    return list(dict.fromkeys(r.tenant_id for r in rows if r.tenant_id not in _NO_TENANT))


async def task_rows_of(log: AuditLog, task_id: str, prefix: str = "", *, tenant: str | None = None) -> list[LogRow]:
    """The rows of one tenant's task (in the deployment `prefix`), in story order; `SeveralTenants` rather than a mix.

    A task id is its tenant's: two tenants may both run a `T-1001`. With `tenant`, only its rows, and the records keyed
    by the task id that name no tenant (unreadable ones, and dead letters of them: `unknown`), whoever sent them; none
    when no row is the tenant's. Without, the rows of the one tenant that has the id; when several have it,
    `SeveralTenants` names them.
    """
    rows = await log.task_rows(task_id, prefix)
    if tenant is not None:
        mine = [r for r in rows if r.tenant_id == tenant or r.tenant_id in _NO_TENANT]
        return mine if any(r.tenant_id == tenant for r in mine) else []
    tenants = tenants_of(rows)
    if len(tenants) > 1:
        raise SeveralTenants(task_id, tenants)
    return rows


async def tasks_of_action(log: AuditLog, action_id: str, prefix: str = "") -> list[tuple[str, str | None]]:
    """The tasks (task id, tenant) whose records name `action_id`: one, unless outside agents of several tenants reused the id.

    An action id is what a system of record sees (the executor's idempotency key), so on-call often starts from one.
    """
    rows = await log.search(SearchFilters(action_id=action_id, topic_prefix=prefix), limit=200)
    found: list[tuple[str, str | None]] = []
    for row in rows:
        if row.task_id and (row.task_id, row.tenant_id) not in found:
            found.append((row.task_id, row.tenant_id))
    return found


def rechecked(rows: Sequence[LogRow], lines: list[StoryLine], recheck: Recheck | None) -> list[StoryLine]:
    """`lines` (one per row of `rows`) each marked with why its row does not verify from its own value, with `recheck`."""
    if recheck is None:
        return lines
    return [
        line if (problem := recheck(row)) is None else line.model_copy(update={"unverified": problem})
        for row, line in zip(rows, lines, strict=True)
    ]


async def search(
    log: AuditLog, filters: SearchFilters, *, limit: int = 100, newest: bool = False, recheck: Recheck | None = None
) -> list[StoryLine]:
    """Rows matching `filters`, as story lines (the oldest `limit`, or with `newest` the newest, in order either way).

    A tenant's settings record reads as what it changed from the tenant's record before it, found in the log.
    """
    rows = await log.search(filters, limit=limit, newest=newest)
    return rechecked(rows, story(rows, await previous_settings(log, rows, filters.topic_prefix)), recheck)
