"""Whose approvals the policy service will count for a tenant, as this service learns it from `control`, and how that meets the groups file.

The groups file here says who may decide; the tenant's `approver_groups` setting (operator-signed
`control.tenant`, over the pack's `default` entry when the pack came on `control.policy`) says whose
approvals the policy service counts toward the grant's quorum. When the two disagree, an approver the
file lets in would see "granted" for a grant the policy then denies `approval_quorum_not_met`: such an
approve is refused here (`groups_not_counted`), and the disagreement is logged once.
"""

from __future__ import annotations

from collections.abc import Collection

from servicekit import ControlState
from servicekit.approver_groups import groups_counted, recorded_approver_groups
from services.approval.domain import GroupsConfig

__all__ = ["counted_groups", "disagreement"]


def counted_groups(control: ControlState | None, tenant_id: str, risk: str) -> frozenset[str]:
    """The groups whose approvals of `risk` calls the policy counts for `tenant_id`; empty when any counts or `control` does not tell."""
    if control is None:
        return frozenset()
    record = control.tenants.get(tenant_id)
    pack = control.policy.settings if control.policy is not None else None
    return groups_counted(recorded_approver_groups(record.settings if record is not None else None, pack, tenant_id) or {}, risk)


def disagreement(groups: GroupsConfig, tenant_id: str, risk: str, counted: Collection[str]) -> str | None:
    """Why the groups file and the tenant's settings disagree for this class: groups allowed to decide whose approvals do not count."""
    allowed = groups.allowed_groups(tenant_id, risk, escalated=True)
    lost = sorted(allowed - set(counted)) if counted else []
    if not lost:
        return None
    return (
        f"approval: the groups file lets {lost} decide {risk} calls of {tenant_id}, but the tenant's approver_groups count only "
        f"{sorted(counted)}: their approvals are refused (groups_not_counted); align the groups file or the tenant's settings "
        f"(`tidegate tenant set {tenant_id} --setting 'approver_groups=...'`)"
    )
