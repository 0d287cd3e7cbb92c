"""The webhook sender's queue: deliveries due claimed under a lease, given back unsent, and each attempt logged.

New deliveries are written by the request part, in the transaction of the state they announce (outbox). The service's
webhook side (`_webhook_side`) claims them, sends them and records each attempt with its outcome and when the next one
is due: it owns the retries and their backoff, this part only keeps what it decided.
A Protocol, the asyncpg part and the in-memory twin's part (`_webhook_store` composes them with the other parts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from schemas import utcnow
from services.approval._webhook_tables import InMemoryWebhookTables, PgWebhookTables, delivery_of
from services.approval._webhook_values import REFUSED_UNSENT, Attempt, Delivery, Endpoint

__all__ = ["DeliveryQueue", "InMemoryDeliveryQueue", "PgDeliveryQueue"]


class DeliveryQueue(Protocol):
    """Webhook deliveries due, as the sender claims, gives back and attempts them."""

    async def claim_due_deliveries(
        self, now: datetime, lease: timedelta, limit: int = 50, per_endpoint: int = 5
    ) -> list[tuple[Delivery, Endpoint]]:
        """Pending deliveries due now, leased so that another copy of the service does not send them too.

        At most `per_endpoint` of each endpoint, in the order they were queued, and every endpoint's first before any
        endpoint's second: an endpoint with a backlog (a dead or slow receiver) cannot fill the batch and starve the others.
        A request's messages to an endpoint go in the order they were queued (a chat reader is told of a request before
        its decision): a message due brings along those queued before it for the same request that wait out a backoff,
        and waits while one of them is held under a lease or falls due within one.
        Each with its endpoint as one row read now: the attempt's URL, secret and the approvers whose links it carries.
        """
        ...

    async def release_deliveries(self, delivery_ids: Sequence[str], now: datetime) -> None:
        """Give claimed deliveries that were not attempted back: due again at `now`, without counting an attempt."""
        ...

    async def record_attempt(
        self,
        delivery_id: str,
        attempt: int,
        *,
        status_code: int | None,
        error: str | None,
        duration_ms: float,
        outcome: str,
        next_at: datetime | None,
        waiting_due: tuple[datetime, datetime] | None = None,
    ) -> None:
        """Log one attempt and move the delivery on (`delivered`, `failed`, or `pending` until `next_at`), if it is still pending.

        A delivery failed meanwhile (its endpoint removed) stays failed; the attempt is logged all the same. With
        `waiting_due` (`now`, `beyond`) and the delivery delivered, its endpoint's other messages waiting out a retry's
        backoff until after `beyond` are due at `now`: the receiver answers again, so what it missed goes now, not up to
        `webhook_backoff_max_s` later. `beyond` is past any claim's lease, so a message another round holds is not touched.
        """
        ...

    async def queue_instead(self, delivery_id: str, attempt: int, error: str, message: Delivery, now: datetime) -> bool:
        """Fail `delivery_id` with `error` (logged as attempt `attempt`) and queue `message` in its place, due at `now`, at once.

        Only while `delivery_id` is still pending; `message` is written once (`ON CONFLICT`: an id written before stays).
        Whether `message` was written now.
        """
        ...


class PgDeliveryQueue(PgWebhookTables, DeliveryQueue):
    """The PostgreSQL part: a claim is a lease (the next attempt pushed out), so that copies of the service share the work."""

    async def claim_due_deliveries(
        self, now: datetime, lease: timedelta, limit: int = 50, per_endpoint: int = 5
    ) -> list[tuple[Delivery, Endpoint]]:
        """Pending deliveries due now, at most `per_endpoint` of each endpoint, leased (next attempt pushed out).

        A row another copy claims meanwhile is skipped: the update waits for its lock, then finds it no longer due.
        The pending messages of an endpoint whose row is refused are failed, with why, never sent. A round finds nothing
        due most of the time (every second at idle): one indexed look then, not a transaction of three statements.
        """
        async with self.pool.acquire() as conn:
            due = f"SELECT EXISTS (SELECT 1 FROM {self.s}.webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1)"
            if not await conn.fetchval(due, now):
                return []
            return await self._claim_due(conn, now, lease, limit, per_endpoint)

    async def _claim_due(
        self, conn: Any, now: datetime, lease: timedelta, limit: int, per_endpoint: int
    ) -> list[tuple[Delivery, Endpoint]]:
        """The claim itself, in one transaction: the due messages leased, each with its endpoint's row read now."""
        async with conn.transaction():
            sibling = (  # a pending message of the same request to the same endpoint
                f"SELECT 1 FROM {self.s}.webhook_deliveries o WHERE o.tenant_id = w.tenant_id AND o.endpoint_id = w.endpoint_id "
                "AND o.approval_id = w.approval_id AND o.status = 'pending' AND o.delivery_id <> w.delivery_id "
            )
            rows = await conn.fetch(
                f"UPDATE {self.s}.webhook_deliveries d SET next_attempt_at = $2 FROM (SELECT delivery_id, turn, due_at FROM ("
                "SELECT delivery_id, next_attempt_at AS due_at, row_number() OVER (PARTITION BY tenant_id, endpoint_id "
                f"ORDER BY created_at, next_attempt_at) AS turn FROM {self.s}.webhook_deliveries w "
                "WHERE status = 'pending' AND (next_attempt_at <= $1 OR next_attempt_at > $2 "
                f"AND EXISTS ({sibling} AND o.created_at > w.created_at AND o.next_attempt_at <= $1)) "
                f"AND NOT EXISTS ({sibling} AND o.created_at < w.created_at AND o.next_attempt_at > $1 AND o.next_attempt_at <= $2) "
                f"AND EXISTS (SELECT 1 FROM {self.s}.webhook_endpoints e WHERE e.tenant_id = w.tenant_id AND e.endpoint_id = w.endpoint_id "
                "AND e.enabled)) ranked WHERE turn <= $4 ORDER BY turn, due_at LIMIT $3) due "
                "WHERE d.delivery_id = due.delivery_id AND d.status = 'pending' AND (d.next_attempt_at <= $1 OR d.next_attempt_at > $2) "
                "RETURNING d.*, due.turn, due.due_at",
                now,
                now + lease,
                limit,
                per_endpoint,
            )
            result = []
            for row in sorted(rows, key=lambda r: (r["turn"], r["due_at"])):  # each endpoint's in the order they were queued
                ep = await conn.fetchrow(  # an endpoint removed since the ranking: its deliveries are failed, never sent
                    f"SELECT * FROM {self.s}.webhook_endpoints WHERE tenant_id = $1 AND endpoint_id = $2 AND enabled",
                    row["tenant_id"],
                    row["endpoint_id"],
                )
                endpoint = self._endpoint(ep) if ep is not None else None
                if endpoint is not None and endpoint.unproven is not None:
                    await self._fail_refused(conn, endpoint)
                elif endpoint is not None:
                    result.append((delivery_of(row), endpoint))
        return result

    async def _fail_refused(self, conn: Any, endpoint: Endpoint) -> None:
        """Fail the pending messages of an endpoint whose row is refused (told once), with why: they are never sent."""
        failed = await conn.execute(
            f"UPDATE {self.s}.webhook_deliveries SET status = 'failed', last_error = $3 "
            "WHERE tenant_id = $1 AND endpoint_id = $2 AND status = 'pending'",
            endpoint.tenant_id,
            endpoint.endpoint_id,
            f"{REFUSED_UNSENT} ({endpoint.unproven}); registering the endpoint again sends its request anew if still pending",
        )
        if failed != "UPDATE 0":
            self.endpoint_rows.refused(endpoint)

    async def release_deliveries(self, delivery_ids: Sequence[str], now: datetime) -> None:
        """Give claimed deliveries that were not attempted back, due at `now`."""
        await self.pool.execute(
            f"UPDATE {self.s}.webhook_deliveries SET next_attempt_at = $2 WHERE delivery_id = ANY($1::text[]) AND status = 'pending'",
            list(delivery_ids),
            now,
        )

    async def record_attempt(
        self,
        delivery_id: str,
        attempt: int,
        *,
        status_code: int | None,
        error: str | None,
        duration_ms: float,
        outcome: str,
        next_at: datetime | None,
        waiting_due: tuple[datetime, datetime] | None = None,
    ) -> None:
        """Log one attempt (numbered after those before a re-queue) and move the delivery on, if it is still pending.

        Delivered with `waiting_due`: the endpoint's messages waiting out a backoff are brought forward in the same statement.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO {self.s}.webhook_attempts (delivery_id, attempt, status_code, error, duration_ms) "
                f"SELECT $1, GREATEST($2, COALESCE(MAX(attempt), 0) + 1), $3, $4, $5 FROM {self.s}.webhook_attempts WHERE delivery_id = $1 "
                "ON CONFLICT DO NOTHING",
                delivery_id,
                attempt,
                status_code,
                error,
                duration_ms,
            )
            now, beyond = waiting_due if waiting_due is not None else (None, None)
            await conn.execute(
                f"WITH moved AS (UPDATE {self.s}.webhook_deliveries SET attempts = $2, status = $3, last_status_code = $4, "
                "last_error = $5, next_attempt_at = COALESCE($6, next_attempt_at), delivered_at = CASE WHEN $3 = 'delivered' "
                "THEN now() ELSE delivered_at END "
                "WHERE delivery_id = $1 AND status = 'pending' RETURNING tenant_id, endpoint_id, status) "
                f"UPDATE {self.s}.webhook_deliveries w SET next_attempt_at = $7 FROM moved WHERE $7::timestamptz IS NOT NULL "
                "AND moved.status = 'delivered' AND w.tenant_id = moved.tenant_id AND w.endpoint_id = moved.endpoint_id "
                "AND w.delivery_id <> $1 AND w.status = 'pending' AND w.attempts > 0 AND w.next_attempt_at > $8",
                delivery_id,
                attempt,
                outcome,
                status_code,
                error,
                next_at,
                now,
                beyond,
            )

    async def queue_instead(self, delivery_id: str, attempt: int, error: str, message: Delivery, now: datetime) -> bool:
        """Write `message` and fail `delivery_id` in one transaction, only while `delivery_id` is pending."""
        async with self.pool.acquire() as conn, conn.transaction():
            failed = await conn.fetchval(
                f"UPDATE {self.s}.webhook_deliveries SET attempts = $2, status = 'failed', last_status_code = NULL, last_error = $3 "
                "WHERE delivery_id = $1 AND status = 'pending' RETURNING delivery_id",
                delivery_id,
                attempt,
                error,
            )
            if failed is None:
                return False
            await conn.execute(
                f"INSERT INTO {self.s}.webhook_attempts (delivery_id, attempt, status_code, error, duration_ms) "
                f"SELECT $1, GREATEST($2, COALESCE(MAX(attempt), 0) + 1), NULL, $3, 0 FROM {self.s}.webhook_attempts "
                "WHERE delivery_id = $1 ON CONFLICT DO NOTHING",
                delivery_id,
                attempt,
                error,
            )
            written = await conn.fetchval(
                f"INSERT INTO {self.s}.webhook_deliveries (delivery_id, endpoint_id, tenant_id, approval_id, event_type, body, "
                "status, next_attempt_at, body_key_id, body_signature) VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9) "
                "ON CONFLICT DO NOTHING RETURNING delivery_id",
                message.delivery_id,
                message.endpoint_id,
                message.tenant_id,
                message.approval_id,
                message.event_type,
                message.body,
                now,
                message.key_id,
                message.signature,
            )
            return written is not None


class InMemoryDeliveryQueue(InMemoryWebhookTables, DeliveryQueue):
    """The in-memory twin's part."""

    async def claim_due_deliveries(
        self, now: datetime, lease: timedelta, limit: int = 50, per_endpoint: int = 5
    ) -> list[tuple[Delivery, Endpoint]]:
        """Pending deliveries due now, at most `per_endpoint` of each endpoint, leased; a request's in the order queued."""
        pending = [d for d in self.delivery_rows.values() if d.status == "pending" and d.next_attempt_at is not None]

        def queued(d: Delivery) -> datetime:
            return d.created_at or now

        def siblings(d: Delivery) -> list[Delivery]:
            key = (d.tenant_id, d.endpoint_id, d.approval_id)
            return [o for o in pending if (o.tenant_id, o.endpoint_id, o.approval_id) == key and o.delivery_id != d.delivery_id]

        def claimable(d: Delivery) -> bool:
            due_at, leased_until = d.next_attempt_at or now, now + lease
            brought = due_at > leased_until and any(queued(o) > queued(d) and (o.next_attempt_at or now) <= now for o in siblings(d))
            waits = any(queued(o) < queued(d) and now < (o.next_attempt_at or now) <= leased_until for o in siblings(d))
            return (due_at <= now or brought) and not waits and self._enabled(d)

        turns: dict[tuple[str, str], int] = {}
        ranked = []
        for d in sorted(pending, key=lambda d: (queued(d), d.next_attempt_at or now)):
            if claimable(d):
                turn = turns[d.tenant_id, d.endpoint_id] = turns.get((d.tenant_id, d.endpoint_id), 0) + 1
                ranked.append((turn, d))
        due = [d for turn, d in sorted(ranked, key=lambda pair: pair[0]) if turn <= per_endpoint][:limit]
        for d in due:
            self.delivery_rows[d.delivery_id] = replace(d, next_attempt_at=now + lease)
        return [(d, self.endpoint_rows[d.tenant_id, d.endpoint_id]) for d in due if (d.tenant_id, d.endpoint_id) in self.endpoint_rows]

    async def release_deliveries(self, delivery_ids: Sequence[str], now: datetime) -> None:
        """Give claimed deliveries that were not attempted back, due at `now`."""
        for delivery_id in delivery_ids:
            d = self.delivery_rows[delivery_id]
            if d.status == "pending":
                self.delivery_rows[delivery_id] = replace(d, next_attempt_at=now)

    async def record_attempt(
        self,
        delivery_id: str,
        attempt: int,
        *,
        status_code: int | None,
        error: str | None,
        duration_ms: float,
        outcome: str,
        next_at: datetime | None,
        waiting_due: tuple[datetime, datetime] | None = None,
    ) -> None:
        """Log one attempt and move the delivery on, if it is still pending (delivered: the endpoint's waiting ones due now)."""
        d = self.delivery_rows[delivery_id]
        number = max([attempt, *(a.attempt + 1 for a in self.attempts if a.delivery_id == delivery_id)])
        self.attempts.append(Attempt(delivery_id, number, utcnow(), status_code, error, duration_ms))
        if d.status != "pending":
            return
        self.delivery_rows[delivery_id] = replace(
            d,
            attempts=attempt,
            status=outcome,
            last_status_code=status_code,
            last_error=error,
            next_attempt_at=next_at or d.next_attempt_at,
        )
        if outcome != "delivered" or waiting_due is None:
            return
        now, beyond = waiting_due
        for other in list(self.delivery_rows.values()):
            if (
                (other.tenant_id, other.endpoint_id) == (d.tenant_id, d.endpoint_id)
                and other.delivery_id != delivery_id
                and other.status == "pending"
                and other.attempts > 0
                and other.next_attempt_at is not None
                and other.next_attempt_at > beyond
            ):
                self.delivery_rows[other.delivery_id] = replace(other, next_attempt_at=now)

    async def queue_instead(self, delivery_id: str, attempt: int, error: str, message: Delivery, now: datetime) -> bool:
        """Fail `delivery_id` and write `message` in its place, only while `delivery_id` is pending."""
        d = self.delivery_rows[delivery_id]
        if d.status != "pending":
            return False
        self.attempts.append(Attempt(delivery_id, attempt, utcnow(), None, error, 0.0))
        self.delivery_rows[delivery_id] = replace(d, attempts=attempt, status="failed", last_status_code=None, last_error=error)
        if message.delivery_id in self.delivery_rows:
            return False
        self.delivery_rows[message.delivery_id] = replace(message, status="pending", next_attempt_at=now, created_at=now)
        return True
