"""What the approval service reads for a person beside a request: queue age, reviews report, a task's context, kill switch, reasons.

Part of `ApprovalService` (`services.approval.service` composes it).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from schemas import REVIEW_REASONS
from servicekit.metrics import observe_queue
from services.approval import domain
from services.approval._service_base import ServiceBase
from services.approval.domain import ApprovalRecord
from services.approval.quality import QueueAge, queue_age, review_of
from services.approval.reviews import review_report

__all__ = ["QUEUE_LIMIT", "QUEUE_METRICS_EVERY_S", "REPORT_LIMIT", "Reads"]

QUEUE_LIMIT = 5000  # pending requests read to measure a queue's age
QUEUE_METRICS_EVERY_S = 15.0
REPORT_LIMIT = 20000  # requests read for the approver page's report


class Reads(ServiceBase):
    """The queue's age (and its gauges), the reviews report, a request's context and kill switch, the tenant's review reasons."""

    async def queue(self, tenant_id: str | None, now: datetime | None = None) -> QueueAge:
        """The age of a tenant's queue of pending requests (every tenant's for None; one past its expiry no longer counts)."""
        now = now or self.clock()
        pending = await self.repo.search(tenant_id=tenant_id, status="pending", limit=QUEUE_LIMIT)
        return queue_age([r for r in pending if now < r.expires_at], now, self.settings.decision_slo_s)

    async def _observe_queue(self, now: datetime) -> None:
        """Refresh the pending and past-SLO gauges, at most every `QUEUE_METRICS_EVERY_S`."""
        if self._queue_observed_at is not None and (now - self._queue_observed_at).total_seconds() < QUEUE_METRICS_EVERY_S:
            return
        self._queue_observed_at = now
        pending = await self.repo.search(tenant_id=None, status="pending", limit=QUEUE_LIMIT)
        tenants = sorted({r.tenant_id for r in pending})
        slo = self.settings.decision_slo_s
        observe_queue({t: queue_age([r for r in pending if r.tenant_id == t], now, slo).by_risk for t in tenants})

    async def review_report(self, tenant_id: str | None, since_days: float) -> dict[str, Any]:
        """The reviews report (`reviews.review_report`) of the requests created in the last `since_days` days."""
        since = self.clock() - timedelta(days=since_days)
        records = await self.repo.search(tenant_id=tenant_id, status=None, limit=REPORT_LIMIT)
        return review_report(review_of(r) for r in records if r.kind == "approval" and r.created_at >= since)

    async def context(self, record: ApprovalRecord) -> dict[str, Any]:
        """The task's other events known here and its cost so far."""
        events = await self.repo.task_events(record.tenant_id, record.task_id)
        rows = [{"type": e.type, "action_id": e.action_id, "outcome": e.outcome, "cost_usd": e.cost_usd} for e in events]
        return {"events": [{**e.as_dict(), "args": e.args} for e in events], "cost": domain.cost_so_far(rows)}  # a decision's call

    def killswitch(self, tenant_id: str, tool: str) -> dict[str, Any] | None:
        """The kill switch that stops this tool for this tenant, if any (shown on the page)."""
        if self.control is None:
            return None
        switch = self.control.killed(tenant_id, tool)
        if switch is None:
            return None
        return {"tenant_id": switch.data.tenant_id, "tool": switch.data.tool, "reason": switch.data.reason, "set_by": switch.data.set_by}

    def review_reasons(self, tenant_id: str) -> dict[str, str]:
        """The reasons an approver of `tenant_id` may give for a reject or an edit: the defaults and the tenant's own."""
        record = self.control.tenants.get(tenant_id) if self.control is not None else None
        own = record.settings.get("review_reasons") if record is not None else None
        return dict(REVIEW_REASONS) | (dict(own) if isinstance(own, dict) else {})
