"""The one module that talks to litellm: chat completions with tools, timeouts, and cost from the local price map.

litellm is told to use the price map shipped in the package (`LITELLM_LOCAL_MODEL_COST_MAP`) before
it is imported, so neither importing it nor starting the planner touches the network. Everything
else in the planner sees `model_api.ModelClient` and `ModelReply`; tests drive this module against a local
OpenAI-compatible HTTP stub and assert the exact request it sends.
"""

from __future__ import annotations

import json
import os
from typing import Any

from services.planner.model_api import ModelError, ModelReply, ToolCall

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # must precede the import: no price-map download

import litellm

litellm.telemetry = False
litellm.suppress_debug_info = True

__all__ = ["LiteLLMClient"]


class LiteLLMClient:
    """`ModelClient` through litellm, with a per-call timeout and no hidden retries.

    The planner fails a task closed when its model is unavailable instead of retrying here: the bus
    is the one layer that retries, and a retried plan would be a second, different plan.
    """

    def __init__(self, *, api_base: str | None = None, api_key: str | None = None, timeout_s: float = 30.0) -> None:
        self.api_base = api_base
        self.api_key = api_key
        self.timeout_s = timeout_s

    async def complete(self, *, model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> ModelReply:
        """Call `model`; raise ModelError on any failure."""
        kwargs: dict[str, Any] = {"model": model, "messages": messages, "timeout": self.timeout_s, "num_retries": 0, "temperature": 0}
        if tools:
            kwargs["tools"] = tools
            # Our tools are plain functions; litellm's MCP gateway check would import the optional
            # `mcp` package (not installed) and fail every call that carries tools.
            kwargs["_skip_mcp_handler"] = True
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self.api_key:
            kwargs["api_key"] = self.api_key
        try:
            response = await litellm.acompletion(**kwargs)
        except Exception as exc:  # litellm maps every provider error to its own classes; all mean "no plan"
            raise ModelError(f"{model}: {type(exc).__name__}: {exc}") from exc
        try:
            message = response.choices[0].message
        except (AttributeError, IndexError) as exc:
            raise ModelError(f"{model}: answer without a message") from exc
        calls = []
        for call in getattr(message, "tool_calls", None) or []:
            raw = call.function.arguments or "{}"
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            calls.append(ToolCall(name=str(call.function.name), arguments=parsed if isinstance(parsed, dict) else None, raw_arguments=raw))
        usage = getattr(response, "usage", None)
        try:
            usd = float(litellm.completion_cost(completion_response=response, model=model))
        except Exception:  # a model missing from the local price map costs what we can't know: record 0, not fail
            usd = 0.0
        return ModelReply(
            model=model,
            content=message.content,
            tool_calls=calls,
            tokens_in=int(getattr(usage, "prompt_tokens", 0) or 0),
            tokens_out=int(getattr(usage, "completion_tokens", 0) or 0),
            usd=usd,
        )
