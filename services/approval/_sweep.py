"""The approval service's background round: overdue requests expired, waiting ones escalated, the outbox's leftovers published.

Part of `ApprovalService` (`services.approval.service` composes it); `app.py` runs it every `sweep_interval_s`.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta

from servicekit import Attr, span
from services.approval import domain
from services.approval._announcing import Announcing, kept_settled
from services.approval._reads import Reads
from services.approval._service_base import log
from services.approval._webhook_values import Endpoint
from services.approval.domain import ApprovalRecord
from services.approval.repository import SweepKey, SweepPage

__all__ = ["Sweeping"]


async def _every(page: Callable[[SweepKey | None], Awaitable[SweepPage]]) -> AsyncIterator[ApprovalRecord]:
    """Every request a sweep's query finds, read a page at a time, each after the last one's key (none is left out)."""
    after: SweepKey | None = None
    while True:
        records, after = await page(after)
        for record in records:
            yield record
        if after is None:
            return


class Sweeping(Reads, Announcing):
    """One round of expiry, escalation and republishing (and the queue's gauges, `_reads`)."""

    async def sweep(self) -> dict[str, int]:
        """Expire overdue requests, escalate waiting ones, end overlaps past, republish the outbox, write unwritten revocations."""
        now = self.clock()
        counts = {"expired": 0, "escalated": 0, "republished": 0}
        async for record in _every(functools.partial(self.repo.overdue, now)):
            transition = domain.expire(record, now)
            if transition is None or not self.shown(record).record.is_pending:  # set back to pending beside its signed decision
                continue
            attributes = {Attr.SERVICE: "approval", Attr.APPROVAL: record.approval_id, Attr.TASK: record.task_id}
            with span("approval expire", parent=record.traceparent, attributes=attributes):  # the task's trace, like a vote
                outbox, deliveries = await self._announce(transition.record, transition.event_type) if transition.event_type else ([], [])
                if await self.repo.save(record.version, kept_settled(transition.record, outbox), outbox, deliveries):
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
            async for record in _every(functools.partial(self.repo.due_for_escalation, now - after)):
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
        # Last: a row rewritten here is also pinned on the bus; its failure (the round's, logged by the sweep's guard) must
        # not hold back the expiries, escalations and republishing above, as it did when it came first.
        counts["overlaps_ended"] = await self._end_overlaps(now)
        return counts

    async def _end_overlaps(self, now: datetime) -> int:
        """Rewrite each API endpoint whose secret rotation's overlap has passed with its secret alone; how many.

        During an overlap the row seals both secrets together (`sealed_text`); kept so after it, a release before 20
        (a rollback) read that form as the secret itself and signed every message with it, verified by neither secret,
        with no log line (the upgrade probe of release 21). Written as a rotation writes (sealed, signed, pinned).
        An endpoint of the operator's file keeps what the file says; a disabled one, or a row whose proof fails, is left as it
        is. Only the rows whose overlap has ended are read
        (`overlap_ends_at`, migration 016): before, every endpoint's row was read, verified and opened at every round.
        """
        ended = 0
        for found in await self.repo.overlaps_ended(now):  # by an index: nothing read while no overlap is due

            def alone(current: Endpoint) -> Endpoint:
                if current.former_until is None or current.former_until > now:
                    return current  # rotated again meanwhile: its new overlap stays
                return replace(current, former_secret=None, former_until=None, former_approvers=())

            if await self.repo.change_endpoint(found.tenant_id, found.endpoint_id, alone) is not None:
                ended += 1
                log.info(
                    "approval: webhook endpoint %s of tenant %s: the former secret's overlap ended; its row now holds the secret alone",
                    found.endpoint_id,
                    found.tenant_id,
                )
        return ended
