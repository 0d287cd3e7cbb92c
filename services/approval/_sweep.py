"""The approval service's background round: overdue requests expired, waiting ones escalated, the outbox's leftovers published.

Part of `ApprovalService` (`services.approval.service` composes it); `app.py` runs it every `sweep_interval_s`.
"""

from __future__ import annotations

from datetime import timedelta

from servicekit import Attr, span
from services.approval import domain
from services.approval._announcing import Announcing
from services.approval._reads import Reads
from services.approval._service_base import log

__all__ = ["Sweeping"]


class Sweeping(Reads, Announcing):
    """One round of expiry, escalation and republishing (and the queue's gauges, `_reads`)."""

    async def sweep(self) -> dict[str, int]:
        """Expire overdue requests, escalate waiting ones, republish what the outbox still holds, write unwritten revocations."""
        now = self.clock()
        counts = {"expired": 0, "escalated": 0, "republished": 0}
        for record in await self.repo.overdue(now):
            transition = domain.expire(record, now)
            if transition is None:
                continue
            attributes = {Attr.SERVICE: "approval", Attr.APPROVAL: record.approval_id, Attr.TASK: record.task_id}
            with span("approval expire", parent=record.traceparent, attributes=attributes):  # the task's trace, like a vote
                outbox, deliveries = await self._announce(transition.record, transition.event_type) if transition.event_type else ([], [])
                if await self.repo.save(record.version, transition.record, outbox, deliveries):
                    await self._publish(outbox)
                    counts["expired"] += 1
                    if record.kind == "follow_up":  # nothing is published for it: the log says it, for the on-call engineer
                        log.warning(
                            "approval: follow-up %s of %s (tenant %s, %s) expired unresolved: whether the call took effect is "
                            "still unknown and the budget it held stays held; check the system of record",
                            record.approval_id,
                            record.action_id,
                            record.tenant_id,
                            record.tool,
                        )
        if self.settings.escalate_after_s is not None:
            after = timedelta(seconds=self.settings.escalate_after_s)
            for record in await self.repo.due_for_escalation(now - after):
                escalated = domain.escalate(record, now, after)
                if escalated is None:
                    continue
                _, deliveries = await self._announce(escalated, "tidegate.approval.escalated")
                if await self.repo.save(record.version, escalated, [], deliveries):
                    counts["escalated"] += 1
        await self._observe_queue(now)
        stale = now - timedelta(seconds=max(5.0, 2 * self.settings.sweep_interval_s))
        leftovers = await self.repo.unpublished(stale)
        await self._publish(leftovers)
        counts["republished"] = len(leftovers)
        counts["revocations_written"] = await self.repo.write_revocations()  # a revocation whose row write had failed
        return counts
