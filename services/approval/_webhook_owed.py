"""Messages a webhook endpoint is owed: those of the requests it missed while its row was refused.

A message to an endpoint whose row is refused is failed, never sent (`REFUSED_UNSENT`). Registering the endpoint again
marks it as owed; the service then writes a message for each request still pending that it has none of (docs/approval.md).
A Protocol, the asyncpg part and the in-memory twin's part (`_webhook_store` composes them with the other parts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from services.approval._webhook_tables import InMemoryWebhookTables, PgWebhookTables
from services.approval._webhook_values import REFUSED_UNSENT, Delivery, Endpoint

__all__ = ["InMemoryOwedMessages", "OwedMessages", "PgOwedMessages"]


class OwedMessages(Protocol):
    """The endpoints owed messages, the requests each is owed a message of, and writing them."""

    async def owed_endpoints(self) -> list[Endpoint]:
        """Enabled, proven endpoints registered again after their row was refused, whose owed messages are not yet written."""
        ...

    async def owed_requests(self, endpoint: Endpoint, now: datetime) -> list[str]:
        """The requests `endpoint` is owed a message of, oldest first.

        Those of its tenant (`*`: every tenant), pending and not expired at `now`, with no message to it but one failed
        because its row was refused (`REFUSED_UNSENT`).
        """
        ...

    async def owed_counts(self, endpoints: Sequence[Endpoint], now: datetime) -> list[int]:
        """How many requests each of `endpoints` is owed a message of (`owed_requests`), in order."""
        ...

    async def queue_owed(self, endpoint: Endpoint, deliveries: Sequence[Delivery], now: datetime) -> int:
        """Write the owed messages not written yet whose requests are still owed, and mark the endpoint as owing no more.

        At once; how many were written. A request decided or expired since `owed_requests` read it is skipped.
        """
        ...


class PgOwedMessages(PgWebhookTables, OwedMessages):
    """The PostgreSQL part."""

    async def owed_endpoints(self) -> list[Endpoint]:
        """Enabled endpoints marked as owed, whose rows are proven now (a refused one stays refused: told, and left out)."""
        rows = await self.pool.fetch(f"SELECT * FROM {self.s}.webhook_endpoints WHERE owed_due AND enabled ORDER BY tenant_id, endpoint_id")
        return self._proven(rows)

    def _owed(self, tenant: str, endpoint_id: str) -> str:
        """The condition that request `a` is owed a message by the endpoint `tenant`, `endpoint_id` (SQL), as of `$3`.

        `$4` is `REFUSED_UNSENT`: a message failed because the row was refused does not count as one it has.
        """
        return (
            f"a.status = 'pending' AND a.expires_at > $3 AND ({tenant} = '*' OR a.tenant_id = {tenant}) "
            f"AND NOT EXISTS (SELECT 1 FROM {self.s}.webhook_deliveries d WHERE d.tenant_id = {tenant} AND d.endpoint_id = {endpoint_id} "
            "AND d.approval_id = a.approval_id AND NOT (d.status = 'failed' AND starts_with(COALESCE(d.last_error, ''), $4)))"
        )

    async def owed_requests(self, endpoint: Endpoint, now: datetime) -> list[str]:
        """The requests `endpoint` is owed a message of, oldest first."""
        rows = await self.pool.fetch(
            f"SELECT a.approval_id FROM {self.s}.approvals a WHERE {self._owed('$1', '$2')} ORDER BY a.created_at, a.approval_id",
            endpoint.tenant_id,
            endpoint.endpoint_id,
            now,
            REFUSED_UNSENT,
        )
        return [r["approval_id"] for r in rows]

    async def owed_counts(self, endpoints: Sequence[Endpoint], now: datetime) -> list[int]:
        """How many requests each of `endpoints` is owed a message of, in one statement."""
        if not endpoints:
            return []
        rows = await self.pool.fetch(
            f"SELECT e.n, (SELECT count(*) FROM {self.s}.approvals a WHERE {self._owed('e.tenant_id', 'e.endpoint_id')}) AS owed "
            "FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS e(tenant_id, endpoint_id, n) ORDER BY e.n",
            [e.tenant_id for e in endpoints],
            [e.endpoint_id for e in endpoints],
            now,
            REFUSED_UNSENT,
        )
        return [r["owed"] for r in rows]

    async def queue_owed(self, endpoint: Endpoint, deliveries: Sequence[Delivery], now: datetime) -> int:
        """Write each message whose request is still owed (`ON CONFLICT`: an id written before stays), clear `owed_due`, at once."""
        written = 0
        async with self.pool.acquire() as conn, conn.transaction():
            for d in deliveries:
                done = await conn.fetchval(
                    f"INSERT INTO {self.s}.webhook_deliveries (delivery_id, endpoint_id, tenant_id, approval_id, event_type, body, "
                    f"status, next_attempt_at, body_key_id, body_signature) SELECT $5, $2, $1, $6, $7, $8, 'pending', now(), $9, $10 "
                    f"FROM {self.s}.approvals a "
                    f"WHERE a.approval_id = $6 AND {self._owed('$1', '$2')} ON CONFLICT DO NOTHING RETURNING delivery_id",
                    endpoint.tenant_id,
                    endpoint.endpoint_id,
                    now,
                    REFUSED_UNSENT,
                    d.delivery_id,
                    d.approval_id,
                    d.event_type,
                    d.body,
                    d.key_id,
                    d.signature,
                )
                written += done is not None
            await conn.execute(
                f"UPDATE {self.s}.webhook_endpoints SET owed_due = false WHERE tenant_id = $1 AND endpoint_id = $2",
                endpoint.tenant_id,
                endpoint.endpoint_id,
            )
        return written


class InMemoryOwedMessages(InMemoryWebhookTables, OwedMessages):
    """The in-memory twin's part."""

    async def owed_endpoints(self) -> list[Endpoint]:
        """Enabled, proven endpoints marked as owed."""
        found = (self.endpoint_rows.get(key) for key in sorted(self.owed_due))
        return [e for e in found if e is not None and e.enabled and e.unproven is None]

    async def owed_requests(self, endpoint: Endpoint, now: datetime) -> list[str]:
        """The requests `endpoint` is owed a message of, oldest first."""
        has = {
            d.approval_id
            for d in self.delivery_rows.values()
            if (d.tenant_id, d.endpoint_id) == (endpoint.tenant_id, endpoint.endpoint_id)
            and not (d.status == "failed" and (d.last_error or "").startswith(REFUSED_UNSENT))
        }
        owed = [
            r
            for r in self.records.values()
            if r.is_pending and r.expires_at > now and endpoint.tenant_id in ("*", r.tenant_id) and r.approval_id not in has
        ]
        return [r.approval_id for r in sorted(owed, key=lambda r: (r.created_at, r.approval_id))]

    async def owed_counts(self, endpoints: Sequence[Endpoint], now: datetime) -> list[int]:
        """How many requests each of `endpoints` is owed a message of."""
        return [len(await self.owed_requests(e, now)) for e in endpoints]

    async def queue_owed(self, endpoint: Endpoint, deliveries: Sequence[Delivery], now: datetime) -> int:
        """Write each message whose request is still owed and that is not written yet; mark the endpoint as owing nothing more."""
        owed = set(await self.owed_requests(endpoint, now))
        fresh = [d for d in deliveries if d.approval_id in owed and d.delivery_id not in self.delivery_rows]
        for d in fresh:
            self.delivery_rows[d.delivery_id] = replace(d, status="pending", next_attempt_at=now, created_at=now)
        self.owed_due.discard((endpoint.tenant_id, endpoint.endpoint_id))
        return len(fresh)
