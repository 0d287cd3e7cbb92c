"""The webhook delivery log an admin reads (a message, its attempts, a page of messages), and a failed message re-queued.

A Protocol, the asyncpg part and the in-memory twin's part (`_webhook_store` composes them with the other parts).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Protocol

from services.approval._webhook_tables import InMemoryWebhookTables, PgWebhookTables, attempt_of, delivery_of
from services.approval._webhook_values import Attempt, Delivery

__all__ = ["DeliveryLog", "InMemoryDeliveryLog", "PgDeliveryLog"]


class DeliveryLog(Protocol):
    """The delivery log with its attempts."""

    async def delivery(self, delivery_id: str) -> Delivery | None:
        """One delivery."""
        ...

    async def requeue_delivery(self, delivery_id: str, now: datetime) -> Delivery | None:
        """A failed delivery to an enabled endpoint made pending again, due at `now`, its attempts counted from zero.

        None when it is not failed or its endpoint is disabled (by then).
        """
        ...

    async def attempts_of(self, delivery_id: str) -> list[Attempt]:
        """The attempts logged for a delivery, in order."""
        ...

    async def deliveries(
        self,
        approval_id: str | None = None,
        limit: int = 200,
        *,
        tenant_id: str | None = None,
        status: str | None = None,
        after: tuple[datetime, str] | None = None,
    ) -> list[Delivery]:
        """The delivery log, newest first (with `tenant_id`: only messages to that tenant's endpoints; with `status`: in that status).

        `after` (`created_at`, `delivery_id`) resumes past that message: the next page.
        """
        ...


class PgDeliveryLog(PgWebhookTables, DeliveryLog):
    """The PostgreSQL part."""

    async def delivery(self, delivery_id: str) -> Delivery | None:
        """One delivery."""
        row = await self.pool.fetchrow(f"SELECT * FROM {self.s}.webhook_deliveries WHERE delivery_id = $1", delivery_id)
        return delivery_of(row) if row else None

    async def requeue_delivery(self, delivery_id: str, now: datetime) -> Delivery | None:
        """A failed delivery to an enabled endpoint made pending again (the endpoint row locked: a removal waits, then fails it)."""
        row = await self.pool.fetchrow(
            f"UPDATE {self.s}.webhook_deliveries d SET status = 'pending', attempts = 0, next_attempt_at = $2 "
            f"FROM {self.s}.webhook_endpoints e WHERE d.delivery_id = $1 AND d.status = 'failed' AND e.tenant_id = d.tenant_id "
            "AND e.endpoint_id = d.endpoint_id AND e.enabled RETURNING d.*",
            delivery_id,
            now,
        )
        return delivery_of(row) if row else None

    async def attempts_of(self, delivery_id: str) -> list[Attempt]:
        """The attempts logged for a delivery, in order."""
        rows = await self.pool.fetch(f"SELECT * FROM {self.s}.webhook_attempts WHERE delivery_id = $1 ORDER BY attempt", delivery_id)
        return [attempt_of(r) for r in rows]

    async def deliveries(
        self,
        approval_id: str | None = None,
        limit: int = 200,
        *,
        tenant_id: str | None = None,
        status: str | None = None,
        after: tuple[datetime, str] | None = None,
    ) -> list[Delivery]:
        """The delivery log, newest first (with `tenant_id`: only messages to that tenant's endpoints; `after`: the next page)."""
        rows = await self.pool.fetch(
            f"SELECT * FROM {self.s}.webhook_deliveries WHERE ($1::text IS NULL OR approval_id = $1) AND ($3::text IS NULL OR "
            "tenant_id = $3) AND ($4::text IS NULL OR status = $4) "
            "AND ($5::timestamptz IS NULL OR (created_at, delivery_id) < ($5, $6::text)) "
            "ORDER BY created_at DESC, delivery_id DESC LIMIT $2",
            approval_id,
            limit,
            tenant_id,
            status,
            *(after or (None, None)),
        )
        return [delivery_of(r) for r in rows]


class InMemoryDeliveryLog(InMemoryWebhookTables, DeliveryLog):
    """The in-memory twin's part."""

    async def delivery(self, delivery_id: str) -> Delivery | None:
        """One delivery."""
        return self.delivery_rows.get(delivery_id)

    async def requeue_delivery(self, delivery_id: str, now: datetime) -> Delivery | None:
        """A failed delivery to an enabled endpoint made pending again."""
        d = self.delivery_rows.get(delivery_id)
        if d is None or d.status != "failed" or not self._enabled(d):
            return None
        requeued = self.delivery_rows[delivery_id] = replace(d, status="pending", attempts=0, next_attempt_at=now)
        return requeued

    async def attempts_of(self, delivery_id: str) -> list[Attempt]:
        """The attempts logged for a delivery, in order."""
        return sorted((a for a in self.attempts if a.delivery_id == delivery_id), key=lambda a: a.attempt)

    async def deliveries(
        self,
        approval_id: str | None = None,
        limit: int = 200,
        *,
        tenant_id: str | None = None,
        status: str | None = None,
        after: tuple[datetime, str] | None = None,
    ) -> list[Delivery]:
        """The delivery log, newest first."""
        found = [
            d
            for d in self.delivery_rows.values()
            if (approval_id is None or d.approval_id == approval_id)
            and (tenant_id is None or d.tenant_id == tenant_id)
            and (status is None or d.status == status)
        ]
        ordered = sorted(found, key=_log_order, reverse=True)
        return [d for d in ordered if after is None or _log_order(d) < after][:limit]


def _log_order(d: Delivery) -> tuple[datetime, str]:
    """Where a message stands in the delivery log (the in-memory twin's `ORDER BY created_at, delivery_id`)."""
    assert d.created_at is not None  # set when it is queued
    return d.created_at, d.delivery_id
