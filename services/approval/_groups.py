"""Approver groups per tenant, from the groups file: who may decide each risk class, and how many must agree."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import Field

from services.approval._approval_record import UNKNOWN_RISK, Frozen

__all__ = ["DEFAULT_GROUPS", "GroupsConfig", "TenantGroups"]


class TenantGroups(Frozen):
    """Approver groups of one tenant: who may approve each risk class, and how many must agree."""

    risk_groups: dict[str, list[str]] = Field(default_factory=dict, description="Risk class → groups whose members may approve.")
    escalation_groups: dict[str, list[str]] = Field(default_factory=dict, description="Risk class → groups added once a request escalates.")
    required_approvals: dict[str, int] = Field(default_factory=dict, description="Risk class → distinct approvals needed (default 1).")


DEFAULT_GROUPS = TenantGroups(
    risk_groups={
        "financial": ["finance"],
        "destructive": ["security"],
        "draft": ["support"],
        "code_change": ["engineering"],
        "write_low": ["support"],
        "read": ["support"],
        UNKNOWN_RISK: ["security"],
    },
    escalation_groups={"financial": ["finance-leads"], "destructive": ["security-leads"]},
    required_approvals={"destructive": 2},
)


class GroupsConfig(Frozen):
    """Approver groups per tenant (a tenant without its own entry uses `default`)."""

    default: TenantGroups = DEFAULT_GROUPS
    tenants: dict[str, TenantGroups] = Field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None) -> GroupsConfig:
        """Read the YAML file (see docs/approval.md), or the built-in default when `path` is None."""
        if path is None:
            return cls()
        return cls.model_validate(yaml.safe_load(path.read_text()) or {})

    def for_tenant(self, tenant_id: str) -> TenantGroups:
        """The tenant's groups, or the default ones."""
        return self.tenants.get(tenant_id, self.default)

    def allowed_groups(self, tenant_id: str, risk: str, *, escalated: bool) -> set[str]:
        """Groups whose members may decide a request of this risk class (unknown classes: the `unknown` entry)."""
        groups = self.for_tenant(tenant_id)
        allowed = set(groups.risk_groups.get(risk, groups.risk_groups.get(UNKNOWN_RISK, [])))
        if escalated:
            allowed |= set(groups.escalation_groups.get(risk, []))
        return allowed

    def required(self, tenant_id: str, risk: str) -> int:
        """Distinct approvals a grant of this risk class needs."""
        return max(1, self.for_tenant(tenant_id).required_approvals.get(risk, 1))
