"""Planner: turns a task into proposed actions, one at a time, and closes it with its cost.

Its public face: what `tidegate/` and `bench/` may import (`from services.planner import …`); every other module
of the service is private to it (tests/unit/foundation/test_import_rules.py). Names load on first use, so
importing one does not import the whole service.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.planner import domain
    from services.planner.action_ids import ActionIds
    from services.planner.app import PlannerDeps, PlannerProcess, build
    from services.planner.handlers import PlannerHandlers
    from services.planner.llm import LiteLLMClient
    from services.planner.repository import InMemoryTaskRepository, PostgresTaskRepository
    from services.planner.restored import Replayed, replay
    from services.planner.settings import PlannerSettings
    from services.planner.state_seal import StateSeal
    from services.planner.strategies import LlmStrategy, PlaybookStrategy
    from services.planner.task_state import CostRates
    from services.planner.task_views import ClosedTask, OpenTask, handed_off_tasks, open_tasks

__all__ = [
    "ActionIds",
    "ClosedTask",
    "CostRates",
    "InMemoryTaskRepository",
    "LiteLLMClient",
    "LlmStrategy",
    "OpenTask",
    "PlannerDeps",
    "PlannerHandlers",
    "PlannerProcess",
    "PlannerSettings",
    "PlaybookStrategy",
    "PostgresTaskRepository",
    "Replayed",
    "StateSeal",
    "build",
    "domain",
    "handed_off_tasks",
    "open_tasks",
    "replay",
]

_HOME = {
    "ActionIds": "action_ids",
    "build": "app",
    "PlannerDeps": "app",
    "PlannerProcess": "app",
    "CostRates": "task_state",
    "PlannerHandlers": "handlers",
    "LiteLLMClient": "llm",
    "ClosedTask": "task_views",
    "OpenTask": "task_views",
    "handed_off_tasks": "task_views",
    "open_tasks": "task_views",
    "InMemoryTaskRepository": "repository",
    "PostgresTaskRepository": "repository",
    "replay": "restored",
    "Replayed": "restored",
    "PlannerSettings": "settings",
    "StateSeal": "state_seal",
    "LlmStrategy": "strategies",
    "PlaybookStrategy": "strategies",
}


def __getattr__(name: str) -> object:
    """A public name, imported from its module on first use."""
    if name in _HOME:
        return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
