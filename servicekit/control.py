"""What every service knows from the compacted `control` topic: kill switches, policy, budgets, tenants."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from schemas import ControlBudget, ControlKillswitch, ControlPolicy, ControlPolicyData, ControlTenant, ControlTenantData

__all__ = ["ControlState"]


@dataclass
class ControlState:
    """Latest control records by key; applied in topic order, so the newest record wins."""

    killswitches: dict[tuple[str, str], ControlKillswitch] = field(default_factory=dict)
    policy: ControlPolicyData | None = None
    budgets: dict[str, float] = field(default_factory=dict)
    tenants: dict[str, ControlTenantData] = field(default_factory=dict)
    applied: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def apply(self, event: Any) -> None:
        """Handler for `control` events."""
        if isinstance(event, ControlKillswitch):
            scope = (event.data.tenant_id, event.data.tool)
            if event.data.active:
                self.killswitches[scope] = event
            else:
                self.killswitches.pop(scope, None)
        elif isinstance(event, ControlPolicy):
            self.policy = event.data
        elif isinstance(event, ControlBudget):
            self.budgets[event.data.tenant_id] = event.data.limit_usd
        elif isinstance(event, ControlTenant):
            self.tenants[event.data.tenant_id] = event.data
        self.applied += 1
        self.changed.set()

    def killed(self, tenant_id: str, tool: str) -> ControlKillswitch | None:
        """The switch that stops `tool` for `tenant_id`, if any (exact, tool-wide, tenant-wide or global)."""
        for scope in ((tenant_id, tool), ("*", tool), (tenant_id, "*"), ("*", "*")):
            if scope in self.killswitches:
                return self.killswitches[scope]
        return None
