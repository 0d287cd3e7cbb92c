"""Planner strategies by name, for replay and evals: `playbook`, `llm:<model>`, or one registered by a test or plugin.

A name picks the planner's own strategy classes (`services.planner.strategies`); nothing here plans.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from servicekit import ToolCatalog

__all__ = ["StrategyFactory", "make_strategy", "register_strategy", "strategy_names"]

StrategyFactory = Callable[[ToolCatalog], Any]
_REGISTRY: dict[str, StrategyFactory] = {}


def register_strategy(name: str, factory: StrategyFactory) -> None:
    """Make `name` usable with `--planner` (e.g. a playbook version under evaluation)."""
    _REGISTRY[name] = factory


def strategy_names() -> list[str]:
    """Every name `make_strategy` accepts (besides `llm:<model>`)."""
    return sorted({"playbook", *_REGISTRY})


def make_strategy(name: str, catalog: ToolCatalog, *, api_base: str | None = None, api_key: str | None = None) -> Any:
    """The planner strategy called `name`.

    `playbook` is the deterministic playbook; `llm:<model>` (or `llm:<cheap>,<strong>`) plans through
    litellm with the planner's prompts; other names come from `register_strategy`.
    """
    if name in _REGISTRY:
        return _REGISTRY[name](catalog)
    from services.planner import LlmStrategy, PlaybookStrategy

    if name == "playbook":
        return PlaybookStrategy(catalog)
    if name.startswith("llm:"):
        from services.planner import LiteLLMClient

        models = name.removeprefix("llm:").split(",")
        cheap, strong = (models[0], models[-1])
        client = LiteLLMClient(api_base=api_base, api_key=api_key, timeout_s=60.0)
        return LlmStrategy(catalog, client, cheap_model=cheap, strong_model=strong, name=name)
    raise KeyError(f"unknown planner strategy {name!r}; choose from {', '.join(strategy_names())} or llm:<model>")
