"""AWS Step Functions: a `.waitForTaskToken` task whose token Tidegate's decision completes.

The state machine sends the call to an SQS queue and waits:

    "Refund": {"Type": "Task", "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
               "Parameters": {"QueueUrl": "<queue>", "MessageBody": {
                   "tool": "issue_refund", "args.$": "$.refund",
                   "token.$": "$$.Task.Token", "execution.$": "$$.Execution.Id", "state.$": "$$.State.Name"}}}

`StepFunctionsBridge.poll` takes each message, proposes the call (task = the execution, action id =
execution + state + a digest of the task token: each entry of the state, each iteration of a Map or a
loop, is its own action, while a redelivered message follows its first proposal), and deletes the message
once the call is recorded; `complete_decided` sends `SendTaskSuccess` (executed, with the outcome as output) or
`SendTaskFailure` (`tidegate.denied`, `tidegate.rejected`, `tidegate.expired`, `tidegate.failed`…)
when Tidegate has decided. A message that cannot be proposed at all (malformed, args the contract refuses,
an action id taken by another call) fails its task at once with `tidegate.invalid` and the reason.
boto3 is blocking, so its calls run in a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tidegate.client import ActionIdReused, Decided, Escalated, Executed, Tidegate
from tidegate.integrations._common import SWEEP_CONCURRENCY, outcome_dict, sweep

__all__ = ["PendingTokens", "StepFunctionsBridge", "action_id_for", "governed_task"]

log = logging.getLogger(__name__)

_ACTION_ID_MAX = 256  # the contract's limit (schemas.events.ACTION_ID)


def action_id_for(execution: str, state: str, token: str) -> str:
    """`sfn:<execution>:<state>:<digest of the task token>`.

    A state's name repeats in every iteration of a Map state and every pass of a loop, but its task token
    is new at each entry (and each retry), and the same in a redelivered message: the digest makes every
    entry its own action and a redelivery the same one. Cut to the contract's length, the digest kept.
    """
    tail = ":" + hashlib.sha256(token.encode()).hexdigest()[:24]
    return f"sfn:{execution}:{state}"[: _ACTION_ID_MAX - len(tail)] + tail


# What Step Functions answers for a task token nothing can answer any more (the task timed out, the execution ended).
_GONE = frozenset({"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"})


def _task_gone(exc: Exception) -> bool:
    """Whether `exc` is boto3's `ClientError` saying the task is gone (read by duck typing: botocore is the caller's)."""
    response = getattr(exc, "response", None)
    error = response.get("Error") if isinstance(response, dict) else None
    return isinstance(error, dict) and error.get("Code") in _GONE


class _Unproposable(ValueError):
    """A message no retry can propose: its task is failed with the reason instead of being redelivered forever."""


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

    def remove(self, action_id: str, token: str | None = None) -> None:
        """Forget a completed task (with `token`: only if no retried state replaced that token)."""
        if token is None:
            self._db.execute("DELETE FROM pending WHERE action_id = ?", (action_id,))
        else:
            self._db.execute("DELETE FROM pending WHERE action_id = ? AND token = ?", (action_id, token))


class StepFunctionsBridge:
    """Moves calls from the queue into Tidegate and Tidegate's decisions back into Step Functions."""

    def __init__(self, client: Tidegate, sfn: Any, sqs: Any, queue_url: str, pending: PendingTokens) -> None:
        self.client = client
        self.sfn = sfn
        self.sqs = sqs
        self.queue_url = queue_url
        self.pending = pending

    async def poll(self, wait_s: int = 0) -> int:
        """Take the queue's messages once; returns how many were received.

        One message's trouble stays its own, and the other messages of the batch are handled either way:
        a call that cannot be proposed fails its task (`tidegate.invalid`) and is deleted; one whose task
        Step Functions no longer has (`TaskTimedOut`, `TaskDoesNotExist`, `InvalidToken` when answering it)
        is logged and deleted, as nothing can answer it any more; any other error (the decision did not
        come in time, Step Functions or Tidegate unreachable) is logged and the message left for SQS to
        deliver again, which then follows the proposal already made.
        """
        answer = await asyncio.to_thread(self.sqs.receive_message, QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s)
        messages = answer.get("Messages", [])
        for message in messages:
            try:
                try:
                    await self._accept(message["Body"])
                except _Unproposable as exc:
                    await self._refuse(message["Body"], str(exc))
            except Exception as exc:  # any error is this message's alone; the batch goes on
                if not _task_gone(exc):
                    log.warning("step functions message left for redelivery: %r", exc)
                    continue
                log.warning("step functions message deleted, its task is gone: %s", exc)
            # Deleted only once the call is proposed and its token recorded or answered: a crash before means a redelivery.
            await asyncio.to_thread(self.sqs.delete_message, QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return len(messages)

    async def _accept(self, raw: str) -> None:
        try:
            body = json.loads(raw)
            execution, state, token, tool = (str(body[k]) for k in ("execution", "state", "token", "tool"))
            args = body.get("args") or {}
            if not isinstance(args, dict):
                raise TypeError(f"args is a JSON object, not {type(args).__name__}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise _Unproposable(f"not a governed task's message: {exc!r}") from exc
        action_id = action_id_for(execution, state, token)
        try:
            outcome = await self.client.propose(tool, dict(args), task=execution, action_id=action_id, rationale="Step Functions task")
        except (
            ActionIdReused,
            ValidationError,
            ValueError,
            TypeError,
        ) as exc:  # the call itself is refused; sending it again changes nothing
            raise _Unproposable(str(exc)) from exc
        if isinstance(outcome, Escalated):
            self.pending.add(action_id, outcome.position, token)
        else:
            await self._send(token, outcome)

    async def _refuse(self, raw: str, reason: str) -> None:
        """Fail the message's task with the reason; a message without a token cannot be answered, only logged."""
        try:
            token = json.loads(raw)["token"]
        except (ValueError, KeyError, TypeError):
            token = None
        if not isinstance(token, str) or not token:
            log.error("dropped a step functions message with no task token to fail: %s", reason)
            return
        cause = json.dumps({"outcome": "invalid", "reasons": ["unproposable"], "message": reason})
        await asyncio.to_thread(self.sfn.send_task_failure, taskToken=token, error="tidegate.invalid", cause=cause[:32768])

    async def complete_decided(self, *, timeout_s: float = 1.0, concurrency: int = SWEEP_CONCURRENCY) -> int:
        """Send the decision of every waiting task whose human decided; returns how many.

        One read of the answer topics serves the whole sweep (one per position the rows share, that is per
        client start), waiting at most `timeout_s` for the decisions, so a sweep takes about `timeout_s` however
        many tasks wait; then the decisions are sent, `concurrency` at a time.
        One task's trouble stays its own: an error sending its decision is logged and the sweep goes on. A task
        Step Functions no longer has (`TaskTimedOut`, `TaskDoesNotExist`, `InvalidToken`) is dropped; on any
        other error (Step Functions unreachable, throttled) the task stays for the next sweep. A task whose action
        id the policy decided for another call is logged as an error and kept.
        """

        async def complete(action_id: str, token: str, final: Decided) -> bool:
            try:
                await self._send(token, final)
            except Exception as exc:  # any error is this task's alone; the sweep goes on
                if _task_gone(exc):
                    log.warning("step functions task %s is gone, its decision is dropped: %s", action_id, exc)
                    self.pending.remove(action_id, token)
                else:
                    log.warning("step functions task %s not answered, kept for the next sweep: %r", action_id, exc)
                return False
            self.pending.remove(action_id)
            return True

        rows = self.pending.rows()
        return await sweep(self.client, rows, complete, what="step functions task", timeout_s=timeout_s, concurrency=concurrency)

    async def _send(self, token: str, outcome: Decided) -> None:
        body = outcome_dict(outcome)
        if isinstance(outcome, Executed):
            await asyncio.to_thread(self.sfn.send_task_success, taskToken=token, output=json.dumps(body))
        else:
            await asyncio.to_thread(
                self.sfn.send_task_failure, taskToken=token, error=f"tidegate.{body['outcome']}", cause=json.dumps(body)[:32768]
            )
