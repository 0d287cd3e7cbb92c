"""Executor: performs signed, authorized tool calls exactly once.

Its public face: what `tidegate/` and `bench/` may import (`from services.executor import …`); every other module
of the service is private to it (tests/unit/foundation/test_import_rules.py). Names load on first use, so
importing one does not import the whole service.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.executor.app import ExecutorDeps, ExecutorProcess, build
    from services.executor.claims import PgClaimStore
    from services.executor.in_flight import CallState, calls_of
    from services.executor.restored import keep_signed_result
    from services.executor.settings import ExecutorSettings

__all__ = [
    "CallState",
    "ExecutorDeps",
    "ExecutorProcess",
    "ExecutorSettings",
    "PgClaimStore",
    "build",
    "calls_of",
    "keep_signed_result",
]

_HOME = {
    "ExecutorSettings": "settings",
    "build": "app",
    "ExecutorDeps": "app",
    "ExecutorProcess": "app",
    "CallState": "in_flight",
    "calls_of": "in_flight",
    "PgClaimStore": "claims",
    "keep_signed_result": "restored",
}


def __getattr__(name: str) -> object:
    """A public name, imported from its module on first use."""
    if name in _HOME:
        return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
