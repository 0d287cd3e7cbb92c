"""A task's cost as the approval service has seen it, for the approver to weigh: spent and reserved."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["cost_so_far"]


def cost_so_far(events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The task's cost from the decisions and results this service has seen.

    `spent_usd` sums the results' actual cost, ONE result per action id (a result re-published
    under another event id is the same result); `reserved_usd` sums the estimates of calls policy
    allowed whose result has not been seen yet.
    """
    reserved = 0.0
    counts: dict[str, int] = {}
    results: dict[str, float] = {}
    rows = list(events)
    for row in rows:
        if row["type"].startswith("tidegate.action.") and row["type"] != "tidegate.action.decided":
            if row["action_id"] in results:
                continue
            results[row["action_id"]] = float(row.get("cost_usd") or 0.0)
        counts[row["type"]] = counts.get(row["type"], 0) + 1
    spent, finished = sum(results.values()), set(results)
    for row in rows:
        if row["type"] == "tidegate.action.decided" and row.get("outcome") == "allow" and row["action_id"] not in finished:
            reserved += float(row.get("cost_usd") or 0.0)
    return {"spent_usd": round(spent, 6), "reserved_usd": round(reserved, 6), "events": counts}
