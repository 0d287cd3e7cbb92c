"""A stand-in for policy, approval and executor, in-process: offline examples and tests of agents and adapters.

It speaks the real contract over a `MemoryTransport`: decides each proposal with a rule you give,
asks a "human" (you, through `approve`/`reject`) on escalation, and executes allowed calls once per
action id, either with a local function or, for `topic` tools, through `tools.<tool>.requests`.
Like the real services it signs what each of them produces (keys made for the run, whose public
halves it hands the bus as `transport.trust`), and a `topic` invocation carries the authorization
its "policy" signed.
It proves nothing about the real services; integration tests do that.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import (
    ActionAuthorizedData,
    ActionDecided,
    ActionDecidedData,
    ActionFailed,
    ActionProposedData,
    ActionResultData,
    ActionSucceeded,
    ApprovalData,
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    Authorization,
    Envelope,
    ErrorInfo,
    Reason,
    ToolInvocation,
    ToolInvocationData,
    ToolReplyData,
    action_digest,
    action_identity,
    authorization_message,
)
from tidegate.client.memory import MemoryTransport
from tidegate.client.trust import DeploymentKeys

__all__ = ["Rule", "ScriptedTidegate"]

Rule = Callable[[ActionProposedData], tuple[str, str] | tuple[str, str, str]]
"""Decides a proposal: (`allow`|`deny`|`escalate`, reason code), or with the reason's message as a third item."""

LocalTool = Callable[[dict[str, Any]], Awaitable[dict[str, Any]] | dict[str, Any]]


class ScriptedTidegate:
    """Scripted governance on a memory bus; `calls[tool]` lists the args each executed call ran with.

    As the policy does, it refuses a proposal whose action id another call (another tenant's, or other args)
    was decided under: nothing is published for it, and it is kept in `refused`.
    """

    def __init__(
        self, transport: MemoryTransport, rule: Rule, *, tools: dict[str, LocalTool] | None = None, topic_tools: tuple[str, ...] = ()
    ) -> None:
        self.transport = transport
        self.keys = DeploymentKeys()
        transport.trust = self.keys.trust()
        self.rule = rule
        self.tools = tools or {}
        self.topic_tools = topic_tools
        self.calls: dict[str, list[dict[str, Any]]] = {}
        self.proposals: list[ActionProposedData] = []
        self.refused: list[ActionProposedData] = []
        self._decided: dict[str, ActionDecidedData] = {}
        self._requests: dict[str, ApprovalData] = {}
        self._executed: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> ScriptedTidegate:
        self._tasks.append(asyncio.create_task(self._decide_all()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def pending(self) -> list[ApprovalData]:
        """Approval requests nobody decided yet."""
        return [r for r in self._requests.values() if r.approver is None]

    async def _decide_all(self) -> None:
        async for _, event in self.transport.read(("actions.proposed",), None):
            await self._decide(event.data)

    async def _decide(self, p: ActionProposedData) -> None:
        self.proposals.append(p)
        known = self._decided.get(p.action_id)
        if known is not None and (known.tenant_id, known.action_digest) != (p.tenant_id, action_digest(p.tenant_id, p.tool, p.args)):
            self.refused.append(p)  # the policy dead-letters it `action_id_reused`: no client reads that
            return
        if known is not None:  # a redelivered proposal gets its recorded decision again, never a second one
            await self._publish("policy", "actions.decided", ActionDecided.build(known, source="scripted/policy"))
            return
        outcome, code, *message = self.rule(p)
        decided = self._decision(p.action_id, p.task_id, p.tenant_id, p.tool, p.args, outcome, code, "policy", *message, step=p.step)
        self._decided[p.action_id] = decided
        await self._publish("policy", "actions.decided", ActionDecided.build(decided, source="scripted/policy"))
        if outcome == "allow":
            self._spawn(self._execute(decided))
        elif outcome == "escalate":
            request = ApprovalData(
                approval_id=f"ap-{uuid.uuid4().hex[:10]}",
                action_id=p.action_id,
                task_id=p.task_id,
                tenant_id=p.tenant_id,
                tool=p.tool,
                args=p.args,
                action_digest=decided.action_digest,
                reasons=decided.reasons,
                expires_at=datetime.now(UTC) + timedelta(hours=1),
                requested_by=p.requested_by,
            )
            self._requests[request.approval_id] = request
            await self._publish("approval", "approvals", ApprovalRequested.build(request, source="scripted/approval"))

    def _decision(
        self,
        action_id: str,
        task_id: str,
        tenant: str,
        tool: str,
        args: dict[str, Any],
        outcome: str,
        code: str,
        via: str,
        message: str = "",
        *,
        step: int = 0,
    ) -> ActionDecidedData:
        digest = action_digest(tenant, tool, args)
        return ActionDecidedData.model_validate(
            {
                "action_id": action_id,
                "task_id": task_id,
                "tenant_id": tenant,
                "step": step,
                "tool": tool,
                "args": args,
                "action_digest": digest,
                "outcome": outcome,
                "reasons": [Reason(code=code, policy_id="scripted", message=message)],
                "policy_version": "scripted",
                "latency_ms": 0.0,
                "via": via,
            }
        )

    async def approve(
        self,
        approval_id: str,
        approver: str = "human@example",
        edited_args: dict[str, Any] | None = None,
        *,
        comment: str | None = None,
        review_reason: str | None = None,
    ) -> None:
        """A human grants (an edit with its comment and review reason, if given); policy (scripted: always) allows it as edited; it runs."""
        request = self._requests[approval_id]
        decided = {"approver": approver, "edited_args": edited_args, "comment": comment, "review_reason": review_reason}
        granted = request.model_copy(update={**decided, "decided_at": datetime.now(UTC)})
        self._requests[approval_id] = granted
        await self._publish("approval", "approvals", ApprovalGranted.build(granted, source="scripted/approval"))
        args = edited_args if edited_args is not None else request.args
        step = self._decided[request.action_id].step  # the escalated decision's: an approval names no step
        again = self._decision(
            request.action_id, request.task_id, request.tenant_id, request.tool, args, "allow", "approved_by_human", "approval", step=step
        )
        await self._publish("policy", "actions.decided", ActionDecided.build(again, source="scripted/policy"))
        self._spawn(self._execute(again))

    async def reject(
        self, approval_id: str, approver: str = "human@example", comment: str | None = None, *, review_reason: str | None = None
    ) -> None:
        """A human rejects (with a comment and a review reason, if given); nothing runs."""
        request = self._requests[approval_id]
        decided = {"approver": approver, "comment": comment, "review_reason": review_reason, "decided_at": datetime.now(UTC)}
        rejected = request.model_copy(update=decided)
        self._requests[approval_id] = rejected
        await self._publish("approval", "approvals", ApprovalRejected.build(rejected, source="scripted/approval"))

    async def _publish(self, service: str, topic: str, event: Envelope) -> None:
        """Publish as `service` would: signed with its key."""
        await self.transport.publish(topic, self.keys.sign_event(service, event))

    def _authorized(self, d: ActionDecidedData) -> ActionAuthorizedData:
        """The authorization the policy signs for an allowed call (briefly valid, bound to its digest)."""
        now = datetime.now(UTC)
        auth = Authorization(
            via="approval" if d.via == "approval" else "policy",
            policy_version=d.policy_version,
            action_digest=d.action_digest,
            issued_at=now,
            expires_at=now + timedelta(minutes=5),
            key_id=self.keys.key_id("policy"),
            signature="",
        )
        data = ActionAuthorizedData(**action_identity(d), tool=d.tool, args=d.args, authorization=auth)
        signed = auth.model_copy(update={"signature": self.keys.sign("policy", authorization_message(data))})
        return data.model_copy(update={"authorization": signed})

    def _spawn(self, coro: Awaitable[None]) -> None:
        self._tasks.append(asyncio.ensure_future(coro))

    async def _execute(self, d: ActionDecidedData) -> None:
        if d.action_id in self._executed:  # claimed once, like the executor's row per action id
            return
        self._executed.add(d.action_id)
        self.calls.setdefault(d.tool, []).append(d.args)
        try:
            result = await self._run(d)
            status, error = "succeeded", None
        except Exception as exc:  # the tool's failure is the action's result
            result, status, error = None, "failed", ErrorInfo(type=type(exc).__name__, message=str(exc))
        data = ActionResultData(
            **action_identity(d),
            tool=d.tool,
            status=status,  # type: ignore[arg-type]
            result=result,
            error=error,
            attempts=1,
            duration_ms=0.0,
            idempotency_key=d.action_id,
        )
        event = ActionSucceeded.build(data, source="scripted/executor") if error is None else ActionFailed.build(data, source="s/e")
        await self._publish("executor", "actions.results", event)

    async def _run(self, d: ActionDecidedData) -> dict[str, Any]:
        if d.tool in self.topic_tools:
            return await self._invoke_topic(d)
        value = self.tools[d.tool](d.args) if d.tool in self.tools else {"ok": True}
        if not isinstance(value, dict):
            value = await value
        return value

    async def _invoke_topic(self, d: ActionDecidedData) -> dict[str, Any]:
        replies = self.transport.read((f"tools.{d.tool}.replies",), await self.transport.end((f"tools.{d.tool}.replies",)))
        invocation = ToolInvocationData(
            action_id=d.action_id,
            task_id=d.task_id,
            tenant_id=d.tenant_id,
            tool=d.tool,
            args=d.args,
            idempotency_key=d.action_id,
            deadline=datetime.now(UTC) + timedelta(seconds=30),
            reply_topic=f"tidegate.tools.{d.tool}.replies",
            authorized=self._authorized(d),
        )
        await self._publish("executor", f"tools.{d.tool}.requests", ToolInvocation.build(invocation, source="scripted/executor"))
        async for _, event in replies:
            reply: ToolReplyData = event.data
            if reply.action_id == d.action_id:
                if reply.ok:
                    return reply.result or {}
                raise RuntimeError(f"{reply.error.type if reply.error else 'error'}: {reply.error.message if reply.error else ''}")
        raise RuntimeError("replies ended")
