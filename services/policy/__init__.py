"""Policy: decides every proposed action with Cedar policy-as-code and alone signs what may run.

Its public face: what `tidegate/` and `bench/` may import (`from services.policy import …`); every other module
of the service is private to it (tests/unit/foundation/test_import_rules.py). Names load on first use, so
importing one does not import the whole service.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.policy._memory_repository import InMemoryPolicyRepository
    from services.policy.app import PolicyDeps, PolicyProcess, build, in_process
    from services.policy.cedar_schema import cedar_schema_json
    from services.policy.engine import Controls, decide
    from services.policy.facts import Call, FailedRead, Flow, History, SystemRecord
    from services.policy.handlers import PolicyHandlers
    from services.policy.pack import CompiledPack, PackError, PackSource, compile_pack, validate_pack
    from services.policy.packtest import load_cases, run_cases
    from services.policy.restored import Restoration
    from services.policy.service import PolicyService
    from services.policy.settings import PolicySettings
    from services.policy.tenant_settings import PackSettings, TenantSettings

__all__ = [
    "Call",
    "CompiledPack",
    "Controls",
    "FailedRead",
    "Flow",
    "History",
    "InMemoryPolicyRepository",
    "PackError",
    "PackSettings",
    "PackSource",
    "PolicyDeps",
    "PolicyHandlers",
    "PolicyProcess",
    "PolicyService",
    "PolicySettings",
    "Restoration",
    "SystemRecord",
    "TenantSettings",
    "build",
    "cedar_schema_json",
    "compile_pack",
    "decide",
    "in_process",
    "load_cases",
    "run_cases",
    "validate_pack",
]

_HOME = {
    "build": "app",
    "in_process": "app",
    "PolicyDeps": "app",
    "PolicyProcess": "app",
    "cedar_schema_json": "cedar_schema",
    "Controls": "engine",
    "decide": "engine",
    "Call": "facts",
    "FailedRead": "facts",
    "History": "facts",
    "Flow": "facts",
    "SystemRecord": "facts",
    "PolicyHandlers": "handlers",
    "CompiledPack": "pack",
    "PackError": "pack",
    "PackSettings": "tenant_settings",
    "PackSource": "pack",
    "TenantSettings": "tenant_settings",
    "compile_pack": "pack",
    "validate_pack": "pack",
    "load_cases": "packtest",
    "run_cases": "packtest",
    "Restoration": "restored",
    "InMemoryPolicyRepository": "_memory_repository",
    "PolicyService": "service",
    "PolicySettings": "settings",
}


def __getattr__(name: str) -> object:
    """A public name, imported from its module on first use."""
    if name in _HOME:
        return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
