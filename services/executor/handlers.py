"""Handlers of the executor service: thin, they hand each event to the domain."""

from __future__ import annotations

from schemas import ActionAuthorized, ToolReply
from servicekit import Handler
from services.executor.executor import Executor
from services.executor.tools import TopicTools

__all__ = ["on_authorized", "on_tool_reply"]


def on_authorized(executor: Executor) -> Handler:
    """Handler for `actions.authorized`: verify and perform the call once (Reject dead-letters a refusal)."""

    async def handle(event: ActionAuthorized) -> None:
        await executor.handle(event)

    return handle


def on_tool_reply(topic_tools: TopicTools) -> Handler:
    """Handler for `tools.<tool>.replies`: wake the call waiting for this reply."""

    async def handle(event: ToolReply) -> None:
        await topic_tools.on_reply(event)

    return handle
