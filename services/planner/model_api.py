"""What the LLM strategy needs from a model, independent of litellm (which is slow to import)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["ModelClient", "ModelError", "ModelReply", "ToolCall"]


class ModelError(RuntimeError):
    """A model call failed (timeout, refused, unreachable, unusable answer)."""


@dataclass(frozen=True)
class ToolCall:
    """A tool call as the model asked for it; `arguments` is None when they were not valid JSON."""

    name: str
    arguments: dict[str, Any] | None
    raw_arguments: str


@dataclass(frozen=True)
class ModelReply:
    """What a completion returned, and what it cost."""

    model: str
    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    usd: float = 0.0


class ModelClient(Protocol):
    """What the LLM strategy needs from a model provider."""

    async def complete(self, *, model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> ModelReply:
        """One chat completion."""
        ...
