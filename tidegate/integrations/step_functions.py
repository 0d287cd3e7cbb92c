"""AWS Step Functions: a `.waitForTaskToken` task whose token Tidegate's decision completes.

The state machine sends the call to an SQS queue and waits:

    "Refund": {"Type": "Task", "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
               "Parameters": {"QueueUrl": "<queue>", "MessageBody": {
                   "tool": "issue_refund", "args.$": "$.refund",
                   "token.$": "$$.Task.Token", "execution.$": "$$.Execution.Id", "state.$": "$$.State.Name"}}}

`StepFunctionsBridge.poll` takes each message, proposes the call (task = the execution, action id =
execution + state, so a retried state follows the first proposal), and deletes the message once the call is recorded;
`complete_decided` sends `SendTaskSuccess` (executed, with the outcome as output) or
`SendTaskFailure` (`tidegate.denied`, `tidegate.rejected`, `tidegate.expired`, `tidegate.failed`…)
when Tidegate has decided. boto3 is blocking, so its calls run in a thread.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

from tidegate.client import Decided, Escalated, Executed, Tidegate
from tidegate.integrations._common import outcome_dict

__all__ = ["PendingTokens", "StepFunctionsBridge", "governed_task"]


def governed_task(queue_url: str, tool: str, args_path: str) -> dict[str, Any]:
    """The Task state (Amazon States Language) that sends `tool` with the args at `args_path` to the bridge and waits for its token.

    Add `Next`/`End`, `Catch` (errors `tidegate.denied`, `tidegate.rejected`…) and `TimeoutSeconds` as the workflow needs.
    """
    body = {"tool": tool, "args.$": args_path, "token.$": "$$.Task.Token", "execution.$": "$$.Execution.Id", "state.$": "$$.State.Name"}
    return {
        "Type": "Task",
        "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
        "Parameters": {"QueueUrl": queue_url, "MessageBody": body},
    }


class PendingTokens:
    """Task tokens waiting for a human, with their action id and position, in SQLite (survives the bridge's restarts)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS pending (action_id TEXT PRIMARY KEY, position TEXT NOT NULL, token TEXT NOT NULL)")

    def add(self, action_id: str, position: str, token: str) -> None:
        """Record a waiting task (a retried state replaces the token)."""
        self._db.execute(
            "INSERT INTO pending VALUES (?, ?, ?) ON CONFLICT (action_id) DO UPDATE SET token = excluded.token",
            (action_id, position, token),
        )

    def rows(self) -> list[tuple[str, str, str]]:
        """Every task still waiting."""
        return [(str(a), str(p), str(t)) for a, p, t in self._db.execute("SELECT action_id, position, token FROM pending")]

    def remove(self, action_id: str) -> None:
        """Forget a completed task."""
        self._db.execute("DELETE FROM pending WHERE action_id = ?", (action_id,))


class StepFunctionsBridge:
    """Moves calls from the queue into Tidegate and Tidegate's decisions back into Step Functions."""

    def __init__(self, client: Tidegate, sfn: Any, sqs: Any, queue_url: str, pending: PendingTokens) -> None:
        self.client = client
        self.sfn = sfn
        self.sqs = sqs
        self.queue_url = queue_url
        self.pending = pending

    async def poll(self, wait_s: int = 0) -> int:
        """Take the queue's messages once; returns how many were handled."""
        answer = await asyncio.to_thread(self.sqs.receive_message, QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s)
        messages = answer.get("Messages", [])
        for message in messages:
            await self._accept(json.loads(message["Body"]))
            # Deleted only once the call is proposed and its token recorded or answered: a crash before means a redelivery.
            await asyncio.to_thread(self.sqs.delete_message, QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return len(messages)

    async def _accept(self, body: dict[str, Any]) -> None:
        action_id = f"sfn:{body['execution']}:{body['state']}"
        outcome = await self.client.propose(
            str(body["tool"]),
            dict(body.get("args") or {}),
            task=str(body["execution"]),
            action_id=action_id,
            rationale="Step Functions task",
        )
        if isinstance(outcome, Escalated):
            self.pending.add(action_id, outcome.position, str(body["token"]))
        else:
            await self._send(str(body["token"]), outcome)

    async def complete_decided(self, *, timeout_s: float = 1.0) -> int:
        """Send the decision of every waiting task whose human decided; returns how many."""
        completed = 0
        for action_id, position, token in self.pending.rows():
            try:
                final = await self.client.resume(action_id, position=position, timeout_s=timeout_s)
            except TimeoutError:
                continue
            await self._send(token, final)
            self.pending.remove(action_id)
            completed += 1
        return completed

    async def _send(self, token: str, outcome: Decided) -> None:
        body = outcome_dict(outcome)
        if isinstance(outcome, Executed):
            await asyncio.to_thread(self.sfn.send_task_success, taskToken=token, output=json.dumps(body))
        else:
            await asyncio.to_thread(
                self.sfn.send_task_failure, taskToken=token, error=f"tidegate.{body['outcome']}", cause=json.dumps(body)[:32768]
            )
