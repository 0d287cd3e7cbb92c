"""Open work of outside agents (the Python client, LangGraph, MCP, any agent that proposes): actions of no planner task.

An outside agent's task never reaches the planner, so `planner.tasks` knows nothing of it; the services that govern
its actions do. An action still open is, in the order it moves: a human's request the approval service holds
(`pending`), a grant policy has not decided again yet (no decision keyed `approval:<id>`), an authorization policy
reserved budget for that the executor has not claimed, or a call the executor holds (`claimed`, `running`, `waiting`).
A proposal policy has not decided yet is in none of them (only on the bus and in the audit log). Read as the operator,
read-only, one statement per service; the approval service and policy keep no topic prefix, the executor does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["OutsideAction", "read_outside"]

OutsideState = Literal["approval pending", "follow-up pending", "granted", "authorized", "claimed", "running", "waiting"]
"""Where an outside agent's open action stands, in the words of the service that holds it."""


class OutsideAction(BaseModel):
    """One open action an outside agent proposed, as the service holding it records it (no planner task behind it)."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    tenant_id: str
    workflow: None = None  # an outside agent's task has no workflow of Tidegate's
    status: OutsideState
    waits: Literal["human", "decision", "result"]
    proposed_by: str | None = None  # the proposal's `proposer` (`external:client`, the agent's name); None: no service recorded it
    step: int | None = None
    tool: str
    action_id: str
    approval_id: str | None = None
    since: datetime  # the request, the grant, the authorization, or the call's start
    expires_at: datetime | None = None  # a human's request: when it expires unanswered
    attempts: int = 0  # a call the executor holds: its attempts so far; a follow-up: the attempts its unknown outcome took
    retry_at: datetime | None = None  # a call between two attempts: when the next is due


# The planner's own are listed as tasks; a task id is its tenant's (another tenant's planner task of the id is not this one).
_NOT_PLANNED = "NOT EXISTS (SELECT 1 FROM planner.tasks p WHERE p.tenant_id = {t}.tenant_id AND p.task_id = {t}.task_id)"
_TENANT = "($1::text IS NULL OR {t}.tenant_id = $1)"

# Requests a human has not answered (the `approvals_pending` index), and grants policy has not decided again. A follow-up
# of an unknown outcome records no proposer (the executor's result carries none): policy's decision on the proposal does;
# its attempts are the executor's, as the follow-up's facts keep them.
_APPROVALS = f"""SELECT a.approval_id, a.kind, a.status, a.action_id, a.task_id, a.tenant_id, a.tool, a.created_at, a.expires_at,
  COALESCE((a.record->>'step')::int, (proposed.proposal->>'step')::int) AS step,
  COALESCE(a.record->>'proposer', proposed.proposal->>'proposer') AS proposer,
  CASE WHEN a.kind = 'follow_up' THEN COALESCE((a.record->'facts'->>'attempts')::int, 0) ELSE 0 END AS attempts,
  (a.record->>'decided_at')::timestamptz AS decided_at
FROM approval.approvals a
LEFT JOIN policy.decisions proposed ON proposed.key = a.action_id AND proposed.tenant_id = a.tenant_id
WHERE (a.status = 'pending' OR (a.status = 'granted' AND a.kind = 'approval'
       AND NOT EXISTS (SELECT 1 FROM policy.decisions d WHERE d.key = 'approval:' || a.approval_id)))
  AND {_TENANT.format(t="a")} AND {_NOT_PLANNED.format(t="a")}
ORDER BY a.created_at LIMIT $2"""

# Calls the executor holds under this prefix ($3) (the `actions_unfinished` index).
_CALLS = f"""SELECT e.action_id, e.task_id, e.tenant_id, e.tool, e.step, e.status, e.attempts, e.retry_at, e.claimed_at, e.started_at,
  d.proposal->>'proposer' AS proposer
FROM executor.actions e LEFT JOIN policy.decisions d ON d.key = e.action_id
WHERE e.status IN ('claimed', 'running', 'waiting') AND e.topic_prefix = $3 AND {_TENANT.format(t="e")} AND {_NOT_PLANNED.format(t="e")}
ORDER BY e.claimed_at LIMIT $2"""

# Authorized calls (a held reservation, the `reservations_held` index) the executor has not claimed; one whose outcome
# is unknown is a human's follow-up, listed with the requests.
_AUTHORIZED = f"""SELECT r.action_id, r.task_id, r.tenant_id, r.tool, r.created_at,
  (d.proposal->>'step')::int AS step, d.proposal->>'proposer' AS proposer
FROM policy.reservations r LEFT JOIN policy.decisions d ON d.key = r.action_id
WHERE r.status = 'reserved' AND r.outcome_unknown_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM executor.actions e WHERE e.action_id = r.action_id)
  AND {_TENANT.format(t="r")} AND {_NOT_PLANNED.format(t="r")}
ORDER BY r.created_at LIMIT $2"""

_TABLES = ("approval.approvals", "policy.decisions", "policy.reservations", "executor.actions", "planner.tasks")


def _request(r: Any) -> OutsideAction:
    pending = r["status"] == "pending"
    status: OutsideState = ("approval pending" if r["kind"] == "approval" else "follow-up pending") if pending else "granted"
    return OutsideAction(
        task_id=r["task_id"], tenant_id=r["tenant_id"], status=status, waits="human" if pending else "decision",
        proposed_by=r["proposer"], step=r["step"], tool=r["tool"], action_id=r["action_id"], approval_id=r["approval_id"],
        since=r["created_at"] if pending else (r["decided_at"] or r["created_at"]), expires_at=r["expires_at"] if pending else None,
        attempts=r["attempts"],
    )  # fmt: skip


def _call(r: Any) -> OutsideAction:
    since = r["claimed_at"] if r["status"] == "waiting" else (r["started_at"] or r["claimed_at"])
    return OutsideAction(
        task_id=r["task_id"], tenant_id=r["tenant_id"], status=r["status"], waits="result", proposed_by=r["proposer"],
        step=r["step"], tool=r["tool"], action_id=r["action_id"], since=since, attempts=r["attempts"], retry_at=r["retry_at"],
    )  # fmt: skip


def _authorized(r: Any) -> OutsideAction:
    return OutsideAction(
        task_id=r["task_id"], tenant_id=r["tenant_id"], status="authorized", waits="result", proposed_by=r["proposer"],
        step=r["step"], tool=r["tool"], action_id=r["action_id"], since=r["created_at"],
    )  # fmt: skip


async def read_outside(conn: Any, prefix: str, *, tenant: str | None = None, limit: int = 500) -> list[OutsideAction]:
    """Outside agents' open actions (longest waiting first), each as the service holding it records it; `conn`: asyncpg.

    Empty where a service's schema is not installed yet (`tidegate db migrate` installs them all).
    """
    present = await conn.fetchval("SELECT " + " AND ".join(f"to_regclass('{t}') IS NOT NULL" for t in _TABLES))
    if not present:
        return []
    found = [_request(r) for r in await conn.fetch(_APPROVALS, tenant, limit)]
    found += [_call(r) for r in await conn.fetch(_CALLS, tenant, limit, prefix)]
    found += [_authorized(r) for r in await conn.fetch(_AUTHORIZED, tenant, limit)]
    return sorted(found, key=lambda a: a.since)[:limit]
