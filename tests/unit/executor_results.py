"""A test helper: a call's result as the executor publishes it, for acme's task `t-1`."""

from __future__ import annotations

from typing import Any

import schemas as s

__all__ = ["executor_result"]


def executor_result(kind: type[s.Envelope], action_id: str, tool: str, status: str, **kw: Any) -> s.Envelope:
    """A `kind` (`ActionSucceeded`, `ActionFailed`, …) of `status` after one attempt; `kw` sets the other fields (`undo`, `error`)."""
    data = s.ActionResultData(
        action_id=action_id,
        task_id="t-1",
        tenant_id="acme",
        step=1,
        tool=tool,
        status=status,  # type: ignore[arg-type]
        result={} if status == "succeeded" else None,
        attempts=1,
        duration_ms=1.0,
        **kw,
    )
    return kind.build(data, source="tidegate/executor")
