"""The other requests naming the same payee: what an approver of one piece of a split refund needs beside it.

Policy escalates the piece that brings a payee's day over its bound (`cumulative_threshold`), but the approver decides
each request alone: three requests of 501, 503 and 500 USD for one order came in the same second, each its own task, and
each looked fine on its own (the on-call probe). The facts' `paid_payee_usd` is what the payee had been paid when policy
decided the proposal, not since: a grant after it is not in it. So a request shows the tenant's other requests of the
last day whose call names the same payee, with their amount and what became of them.

Each is read as it may be shown (`shown`: `_decision_proofs.as_signed`), never as the approval service's database login
left it: a piece whose row the login rewrote (its amount lowered, its grant made a rejection) is listed as the policy
and the service signed it, with `not_as_signed` saying so (attacker5). The login can still hide a piece (another payee,
tenant or time in its row, or the row deleted): what is listed is true, not that it is all (the audit log keeps all).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from servicekit import ToolCatalog
from services.approval._approval_record import ApprovalRecord
from services.approval._decision_proofs import Shown
from services.approval.repository import ApprovalRepository

__all__ = ["SAME_PAYEE_WINDOW", "same_payee"]

SAME_PAYEE_WINDOW = timedelta(hours=24)  # as the per-payee daily bound counts
_SCANNED = 500  # the tenant's newest requests looked at: a day's worth for a busy tenant's approvers


def _payee_and_amount(catalog: ToolCatalog, record: ApprovalRecord) -> tuple[Any, Any] | None:
    """The payee and amount the record's call names (its edit's, once granted with one); None for a call naming no payee."""
    spec = catalog.get(record.tool)
    if spec is None or spec.facts.payee is None:
        return None
    args = record.edited_args if record.edited_args is not None and record.status == "granted" else record.args
    payee = args.get(spec.facts.payee)
    if payee is None:
        return None
    return payee, args.get(spec.facts.amount) if spec.facts.amount else None


async def same_payee(
    repo: ApprovalRepository,
    catalog: ToolCatalog | None,
    record: ApprovalRecord,
    now: datetime,
    shown: Callable[[ApprovalRecord], Shown] = Shown,
) -> list[dict[str, Any]]:
    """The tenant's other requests of the last day naming `record`'s payee, newest first: id, tool, amount, status, by whom.

    `record`: as shown; `shown`: how another request may be shown (default: as stored, a store without proofs).
    """
    mine = _payee_and_amount(catalog, record) if catalog is not None else None
    if catalog is None or mine is None:
        return []
    since = now - SAME_PAYEE_WINDOW
    found: list[dict[str, Any]] = []
    for stored in await repo.search(tenant_id=record.tenant_id, status=None, limit=_SCANNED):  # newest first
        if stored.created_at < since:
            break
        named = _payee_and_amount(catalog, stored) if stored.approval_id != record.approval_id else None
        if named is None or named[0] != mine[0]:
            continue
        other = shown(stored)  # what is listed is what was signed, never the login's figures
        theirs = _payee_and_amount(catalog, other.record) or named
        found.append(
            {
                "approval_id": other.record.approval_id,
                "action_id": other.record.action_id,
                "task_id": other.record.task_id,
                "tool": other.record.tool,
                "payee": theirs[0],
                "amount_usd": theirs[1],
                "status": other.record.status,
                "decided_by": other.record.decided_by,
                "created_at": other.record.created_at.isoformat(),
                "not_as_signed": other.not_as_signed,
            }
        )
    return found
