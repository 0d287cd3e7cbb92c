"""Temporal: an activity that proposes a tool call and, when a human must decide, completes asynchronously.

    activities = TidegateActivities(client, PendingActivities(path))       # register activities.propose on the worker
    outcome = await workflow.execute_activity(activities.propose, GovernedCall("issue_refund", {...}), ...)
    # beside the worker:
    await complete_decided(client, pending, temporal_client.get_async_activity_handle)   # in a loop

An escalated activity records its task token and raises `raise_complete_async()`: the workflow waits
durably (days, across worker restarts) until the bridge sees Tidegate's decision and completes the
activity with it. The action id is `temporal:<workflow id>:<run id>:<activity id>`, so a retried attempt
follows the first proposal instead of proposing again, and a later run under a reused workflow id
(activity ids restart at 1) proposes its own calls instead of inheriting the earlier run's outcomes.
The human's wait counts against the activity's `start_to_close_timeout`: set it longer than an approval
can stay open (see docs/integrations.md), and no `heartbeat_timeout`.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from temporalio import activity
from temporalio.service import RPCError, RPCStatusCode

from tidegate.client import Decided, Escalated, Tidegate
from tidegate.integrations._common import SWEEP_CONCURRENCY, outcome_dict, sweep

__all__ = ["GovernedCall", "PendingActivities", "TidegateActivities", "complete_decided", "outcome_dict"]

log = logging.getLogger(__name__)

# What Temporal answers when the activity can never be completed: the workflow ended or the activity timed out
# (a retry has a new token, recorded over this one), or the token is not one.
_GONE = frozenset({RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT})


@dataclass
class GovernedCall:
    """The activity's input: a catalogued tool and its args."""

    tool: str
    args: dict[str, Any]
    tainted_args: list[str] = field(default_factory=list)


class PendingActivities:
    """Escalated activities waiting for a human: action id, position and task token, in SQLite (survives restarts)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS pending (action_id TEXT PRIMARY KEY, position TEXT NOT NULL, task_token BLOB NOT NULL)"
        )

    def add(self, action_id: str, position: str, task_token: bytes) -> None:
        """Record (or, for a retried attempt, replace the token of) an escalated activity."""
        self._db.execute(
            "INSERT INTO pending VALUES (?, ?, ?) ON CONFLICT (action_id) DO UPDATE SET task_token = excluded.task_token",
            (action_id, position, task_token),
        )

    def rows(self) -> list[tuple[str, str, bytes]]:
        """Every activity still waiting."""
        return [(str(a), str(p), bytes(t)) for a, p, t in self._db.execute("SELECT action_id, position, task_token FROM pending")]

    def remove(self, action_id: str, task_token: bytes | None = None) -> None:
        """Forget an activity once it is completed (with `task_token`: only if no retried attempt replaced that token)."""
        if task_token is None:
            self._db.execute("DELETE FROM pending WHERE action_id = ?", (action_id,))
        else:
            self._db.execute("DELETE FROM pending WHERE action_id = ? AND task_token = ?", (action_id, task_token))


class Completer(Protocol):
    """What `temporal_client.get_async_activity_handle(task_token=...)` returns (the part used here)."""

    async def complete(self, result: Any = None) -> None:
        """Complete the activity with `result`."""
        ...


class TidegateActivities:
    """The activity a workflow calls instead of calling a tool; the workflow id is the proposal's task."""

    def __init__(self, client: Tidegate, pending: PendingActivities) -> None:
        self.client = client
        self.pending = pending

    @activity.defn(name="tidegate.propose")
    async def propose(self, call: GovernedCall) -> dict[str, Any]:
        """Propose; return the outcome, or complete asynchronously once a human decided."""
        info = activity.info()
        action_id = f"temporal:{info.workflow_id}:{info.workflow_run_id}:{info.activity_id}"
        outcome = await self.client.propose(
            call.tool, call.args, task=info.workflow_id, action_id=action_id, tainted_args=call.tainted_args
        )
        if isinstance(outcome, Escalated):
            self.pending.add(action_id, outcome.position, info.task_token)
            activity.raise_complete_async()
        return outcome_dict(outcome)


async def complete_decided(
    client: Tidegate,
    pending: PendingActivities,
    handle_for: Callable[..., Completer],
    *,
    timeout_s: float = 1.0,
    concurrency: int = SWEEP_CONCURRENCY,
) -> int:
    """Complete every waiting activity whose human decided (run it in a loop beside the worker); returns how many.

    One read of the answer topics serves the whole sweep (one per position the rows share, that is per client
    start), waiting at most `timeout_s` for the decisions, so a sweep takes about `timeout_s` however many
    activities wait; then the decided ones are completed, `concurrency` at a time.
    One activity's trouble stays its own: an error completing it is logged and the sweep goes on. When
    Temporal says the activity is gone (`NOT_FOUND`: the workflow ended or the activity timed out meanwhile;
    `INVALID_ARGUMENT`: a token it cannot read) the row is dropped, since no later sweep can complete it;
    otherwise (Temporal unreachable, say) the row stays for the next sweep. A row whose action id the policy
    decided for another call is logged as an error and kept.
    """

    async def complete(action_id: str, token: bytes, final: Decided) -> bool:
        try:
            await handle_for(task_token=token).complete(outcome_dict(final))
        except Exception as exc:  # any error is this row's alone; the sweep goes on
            if isinstance(exc, RPCError) and exc.status in _GONE:
                log.warning("temporal activity %s is gone, its decision is dropped: %s", action_id, exc)
                pending.remove(action_id, token)
            else:
                log.warning("temporal activity %s not completed, kept for the next sweep: %r", action_id, exc)
            return False
        pending.remove(action_id)
        return True

    return await sweep(client, pending.rows(), complete, what="temporal activity", timeout_s=timeout_s, concurrency=concurrency)
