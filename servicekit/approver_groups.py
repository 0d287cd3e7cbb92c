"""Whose approval counts: the rule the policy (a grant's quorum) and the approval service (who may decide) share.

A tenant's `approver_groups` setting (risk class → groups) names, per class, the groups whose members'
approvals the policy service counts toward a grant's quorum; a class it does not name counts any
approver. The approval service asks the same question before it takes a vote, so an approver whose
vote would not count is told so instead of being shown "granted" for a grant the policy then denies.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

__all__ = ["counts", "groups_counted", "recorded_approver_groups"]


def groups_counted(approver_groups: Mapping[str, Collection[str]], risk: str) -> frozenset[str]:
    """The groups whose members count for `risk` (empty: every approver counts)."""
    return frozenset(approver_groups.get(risk) or ())


def counts(counted: Collection[str], held: Collection[str]) -> bool:
    """Whether an approver holding `held` counts, when `counted` are the groups that do (none named: anyone)."""
    return not counted or not set(counted).isdisjoint(held)


def recorded_approver_groups(
    record: Mapping[str, Any] | None, pack_settings: Mapping[str, Any] | None, tenant_id: str
) -> dict[str, list[str]] | None:
    """The tenant's `approver_groups` as the policy service takes it from records: None when they do not tell.

    `record` is the settings of the tenant's `control.tenant` record, `pack_settings` those of the last
    `control.policy` record. As the policy service merges them: a tenant's record goes over the pack's
    `default` entry; without a record, the pack's own entry for the tenant goes over `default`. A pack
    loaded from the policy service's disk is not on `control`: when neither record names the setting,
    nobody here knows it (None); nor when it is malformed (the policy service then ignores the record).
    """
    tenants = (pack_settings or {}).get("tenants") or {}
    own = record if record is not None else (tenants.get(tenant_id) or {})
    for entry in (own, tenants.get("default") or {}):
        if "approver_groups" in entry:
            return _well_formed(entry["approver_groups"])
    return {} if pack_settings is not None else None


def _well_formed(value: Any) -> dict[str, list[str]] | None:
    """`value` when it is risk class → list of group names, else None."""
    if not isinstance(value, Mapping) or not all(isinstance(v, list) and all(isinstance(g, str) for g in v) for v in value.values()):
        return None
    return {str(k): list(v) for k, v in value.items()}
