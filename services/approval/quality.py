"""The approver queue's health, as pure functions of the pending requests: how many, how old, how many past the SLO."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from services.approval.domain import ApprovalRecord
from services.approval.reviews import Outcome, Review, said_in

__all__ = ["QueueAge", "queue_age", "review_of"]


class QueueAge(BaseModel):
    """How a tenant's queue of pending requests stands now."""

    model_config = ConfigDict(frozen=True)

    pending: int = Field(description="Requests waiting for a human.")
    oldest_s: float = Field(description="Age of the oldest pending request, seconds (0 when none).")
    past_slo: int = Field(description="Pending requests older than the decision SLO.")
    slo_s: float = Field(description="The decision SLO, seconds (`TIDEGATE_APPROVAL_DECISION_SLO_S`).")
    by_risk: dict[str, dict[str, float]] = Field(description="Per risk class: pending, oldest_s, past_slo.")


def queue_age(records: Iterable[ApprovalRecord], now: datetime, slo_s: float) -> QueueAge:
    """The age of the pending approval requests among `records` (follow-ups included: they wait for a human too)."""
    by_risk: dict[str, dict[str, float]] = {}
    ages = []
    for r in records:
        if not r.is_pending:
            continue
        age = max((now - r.created_at).total_seconds(), 0.0)
        ages.append(age)
        row = by_risk.setdefault(r.risk, {"pending": 0, "oldest_s": 0.0, "past_slo": 0})
        row["pending"] += 1
        row["oldest_s"] = max(row["oldest_s"], round(age, 1))
        row["past_slo"] += 1 if age > slo_s else 0
    return QueueAge(
        pending=len(ages),
        oldest_s=round(max(ages, default=0.0), 1),
        past_slo=sum(1 for a in ages if a > slo_s),
        slo_s=slo_s,
        by_risk=dict(sorted(by_risk.items())),
    )


def review_of(record: ApprovalRecord) -> Review:
    """An approval request as a review row (the workflow is not known to this service)."""
    status = record.status
    outcome: Outcome = "pending"
    if status == "granted":
        outcome = "edited" if record.edited_args is not None else "approved"
    elif status in ("rejected", "expired"):
        outcome = status  # type: ignore[assignment]
    return Review(
        tenant_id=record.tenant_id,
        task_id=record.task_id,
        action_id=record.action_id,
        tool=record.tool,
        risk=record.risk,
        outcome=outcome,
        requested_at=record.created_at,
        decided_at=record.decided_at if outcome in ("approved", "edited", "rejected") else None,
        approver=record.decided_by,
        review_reason=record.review_reason,
        comment=record.comment,
        policies=tuple(r.policy_id for r in record.reasons),
        triggers=tuple(str(r.code) for r in record.reasons),
        said=said_in(record.votes, outcome),
    )
