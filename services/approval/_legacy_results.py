"""The result of a task event kept before migration 012, read from its summary: the one place that parses one.

Until then the approval service kept of a result only its summary, `<status> after <n> attempt(s)[: <error type>:
<message>]` (written by `service._result_task_event`), and read the result back by parsing it. Since then the result
itself is kept beside it (`TaskEvent.result`). Rows kept before are read here so that an approver's view of them stays
what it was; they are forgotten after `task_events_kept_s` like every task event, and then this module can go.
"""

from __future__ import annotations

import re

from pydantic import ValidationError

from schemas import ActionResultData, ErrorInfo, ResultCost

__all__ = ["legacy_result"]

_SUMMARY = re.compile(r"(?P<status>\w+) after (?P<attempts>\d+) attempt\(s\)(?:: (?P<type>[^:]*): (?P<message>.*))?", re.DOTALL)


def legacy_result(action_id: str, task_id: str, tenant_id: str, tool: str, cost_usd: float, summary: str) -> ActionResultData | None:
    """The result a summary kept before migration 012 says (its duration was not kept: 0); None when it does not read as one."""
    found = _SUMMARY.fullmatch(summary)
    if found is None:
        return None
    error = ErrorInfo(type=found["type"], message=found["message"]) if found["type"] is not None else None
    try:
        return ActionResultData(
            action_id=action_id,
            task_id=task_id,
            tenant_id=tenant_id,
            tool=tool,
            status=found["status"],  # type: ignore[arg-type]  # validated: a status the contract does not know reads as None
            attempts=int(found["attempts"]),
            duration_ms=0.0,
            error=error,
            cost=ResultCost(usd=cost_usd),
        )
    except ValidationError:
        return None
