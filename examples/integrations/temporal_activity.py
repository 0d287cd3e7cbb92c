"""A Temporal activity governed by Tidegate, offline: the refund escalates, the activity completes asynchronously once a human approves.

The SDK's `ActivityEnvironment` runs the activity; a recorder stands in for `temporal_client.get_async_activity_handle`
(the SDK's workflow test server is a binary it downloads, which an offline machine cannot do).

PYTHONPATH=. .venv-integrations/bin/python examples/integrations/temporal_activity.py
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from _offline import offline
from temporalio import activity
from temporalio.testing import ActivityEnvironment

from tidegate.integrations.temporal import GovernedCall, PendingActivities, TidegateActivities, complete_decided


class Handles:
    """What `temporal_client.get_async_activity_handle(task_token=...)` would complete, recorded."""

    def __init__(self) -> None:
        self.completed: dict[bytes, Any] = {}

    def __call__(self, *, task_token: bytes) -> Any:
        completed = self.completed

        class Handle:
            async def complete(self, result: Any = None) -> None:
                completed[task_token] = result

        return Handle()


async def main() -> list[str]:
    story: list[str] = []
    refund = {"issue_refund": lambda args: {"refund_id": "re_1", **args}}  # a catalog tool: the executor runs it
    _, tidegate, client = offline((), catalog=refund)
    pending = PendingActivities(Path(tempfile.mkdtemp(prefix="tidegate-temporal-")) / "pending.sqlite3")
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        ActivityEnvironment.default_info(), workflow_id="refund-O-1", workflow_run_id="run-1", activity_id="1", task_token=b"token-1"
    )
    handles = Handles()
    async with tidegate, client:
        # Register `activities.propose` on the worker; the workflow calls it instead of calling the tool.
        activities = TidegateActivities(client, pending)
        try:
            await env.run(activities.propose, GovernedCall("issue_refund", {"payee_id": "cus_1", "amount_usd": 900.0}))
        except activity._CompleteAsyncError:  # what `activity.raise_complete_async()` raises: the workflow waits
            [(action_id, _, _)] = pending.rows()
            story.append(f"waiting: {action_id} completes asynchronously ({tidegate.pending()[0].reasons[0].code})")
        await tidegate.approve(tidegate.pending()[0].approval_id, "bob@acme.example")  # in real life: the approver page or API
        await complete_decided(client, pending, handles, timeout_s=5)  # beside the worker, in a loop
        outcome = handles.completed[b"token-1"]
        story.append(f"completed: {outcome['outcome']} {outcome['result']['refund_id']} ({outcome['result']['amount_usd']:.2f} USD)")
    for line in story:
        print(line)
    return story


if __name__ == "__main__":
    asyncio.run(main())
