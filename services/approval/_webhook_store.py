"""Where webhooks are kept: endpoints (one tenant each), the delivery log with its attempts, inbound message ids.

An endpoint is keyed by (tenant_id, endpoint_id): each tenant names its endpoints in its own space,
so no tenant can take, replace or probe another's ids. Its secret is stored sealed and its row signed
(`services.approval._endpoint_rows`): a row the schema's own login wrote or changed is no endpoint.

Part of the approval service's repository (`services.approval.repository` composes it): a Protocol,
the asyncpg part and the in-memory twin's part. New deliveries are written by the request part, in
the transaction of the state they announce (outbox). Messages an endpoint is owed from while its row was refused are
written after it is registered again (`owed_endpoints`, `owed_requests`, `queue_owed`; docs/approval.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg

from schemas import utcnow
from services.approval._endpoint_rows import EndpointRows, SealedSecret

if TYPE_CHECKING:
    from services.approval.domain import ApprovalRecord

__all__ = ["REFUSED_UNSENT", "Attempt", "Delivery", "Endpoint", "InMemoryWebhookStore", "PgWebhookStore", "WebhookStore"]

REFUSED_UNSENT = "not sent: its endpoint's row is refused"
"""How a message failed because its endpoint's row was refused begins: such a message is owed again once it is registered again."""


@dataclass(frozen=True)
class Delivery:
    """A webhook message for one endpoint (`tenant_id`, `endpoint_id`); `delivery_id` is its `webhook-id`."""

    delivery_id: str
    endpoint_id: str
    tenant_id: str
    approval_id: str
    event_type: str
    body: str
    status: str = "pending"
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None
    created_at: datetime | None = field(default=None, compare=False)  # when it was queued: where a page of the log resumes


@dataclass(frozen=True)
class Attempt:
    """One attempt at sending a delivery, as the log `webhook_attempts` keeps it (numbered on across re-queues)."""

    delivery_id: str
    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: float


@dataclass(frozen=True)
class Endpoint:
    """Where webhooks go, with the secret that signs them (and verifies callbacks from it)."""

    endpoint_id: str
    url: str
    secret: str
    tenant_id: str = "*"
    approvers: tuple[str, ...] = ()
    enabled: bool = True
    source: str = "api"
    unproven: str | None = field(default=None, compare=False)  # why the row is no endpoint (None: signed, its secret opened)


class WebhookStore(Protocol):
    """Webhook endpoints, deliveries and inbound message ids."""

    async def remember_message(self, tenant_id: str, endpoint_id: str, message_id: str) -> bool:
        """Record an inbound message id of an endpoint; False when seen before (a replay)."""
        ...

    async def upsert_endpoint(self, endpoint: Endpoint) -> None:
        """Create or replace the endpoint of its tenant with its id (never another tenant's)."""
        ...

    async def endpoint(self, tenant_id: str, endpoint_id: str) -> Endpoint | None:
        """One endpoint of a tenant."""
        ...

    async def set_endpoint_approver(
        self, tenant_id: str, endpoint_id: str, approver: str, *, url: str, secret: str, enrolled: bool
    ) -> Endpoint | None:
        """Add `approver` to the endpoint's approvers (or remove them) in one statement, if it still has this `url` and `secret`.

        None otherwise: the endpoint changed since it was read.
        """
        ...

    async def endpoints_named(self, endpoint_id: str) -> list[Endpoint]:
        """Every tenant's endpoint with this id, enabled or not (for the older callback URL without a tenant)."""
        ...

    async def endpoints(self, tenant_id: str | None = None) -> list[Endpoint]:
        """Enabled endpoints for a tenant (its own and `*`), or all."""
        ...

    async def endpoints_of(self, tenant_id: str) -> list[Endpoint]:
        """The endpoints that belong to a tenant (for `*`: the operator's), enabled or not."""
        ...

    async def claim_due_deliveries(
        self, now: datetime, lease: timedelta, limit: int = 50, per_endpoint: int = 5
    ) -> list[tuple[Delivery, Endpoint]]:
        """Pending deliveries due now, leased so that another copy of the service does not send them too.

        At most `per_endpoint` of each endpoint, earliest due first, and every endpoint's first before any endpoint's
        second: an endpoint with a backlog (a dead or slow receiver) cannot fill the batch and starve the others.
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
    ) -> None:
        """Log one attempt and move the delivery on (`delivered`, `failed`, or `pending` until `next_at`), if it is still pending.

        A delivery failed meanwhile (its endpoint removed) stays failed; the attempt is logged all the same.
        """
        ...

    async def remove_endpoint(self, tenant_id: str, endpoint_id: str, reason: str) -> Endpoint | None:
        """Disable an endpoint and take its approvers off it, and fail its pending deliveries with `reason`, at once.

        The row stays (disabled), for the delivery log and the inbound message ids that name it. None when it does not exist.
        """
        ...

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


def _delivery(row: asyncpg.Record) -> Delivery:
    return Delivery(
        delivery_id=row["delivery_id"],
        endpoint_id=row["endpoint_id"],
        tenant_id=row["tenant_id"],
        approval_id=row["approval_id"],
        event_type=row["event_type"],
        body=row["body"],
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        delivered_at=row["delivered_at"],
        created_at=row["created_at"],
    )


def _attempt(row: asyncpg.Record) -> Attempt:
    return Attempt(
        delivery_id=row["delivery_id"],
        attempt=row["attempt"],
        at=row["at"],
        status_code=row["status_code"],
        error=row["error"],
        duration_ms=row["duration_ms"],
    )


def _sealed(row: asyncpg.Record) -> SealedSecret | None:
    """The row's sealed secret; None for a row from before secrets were sealed (migration 011)."""
    if row["secret_key_id"] is None or row["secret_sealed"] is None:
        return None
    return SealedSecret(row["secret_key_id"], bytes(row["secret_sealed"]))


class PgWebhookStore(WebhookStore):
    """The PostgreSQL part (tables `webhook_endpoints`, `webhook_deliveries`, `webhook_attempts`, `inbound_messages`).

    The repository sets `pool`, `s` and `endpoint_rows`. Every endpoint row it writes has its secret sealed and is signed;
    every row it reads is verified and its secret opened. A row that fails is no endpoint where one grants (a message to
    send, a callback, an enrolment): left out, logged and counted. Listings (`endpoints()` of all, `endpoints_of`) show
    it with `unproven` set, so that an admin sees what to register again.
    """

    pool: asyncpg.Pool
    s: str
    endpoint_rows: EndpointRows

    def _endpoint(self, row: asyncpg.Record) -> Endpoint:
        """A row as an endpoint: its secret opened, or `unproven` set (and an empty secret)."""
        read = Endpoint(
            endpoint_id=row["endpoint_id"],
            url=row["url"],
            secret="",
            tenant_id=row["tenant_id"],
            approvers=tuple(row["approvers"]),
            enabled=row["enabled"],
            source=row["source"],
        )
        return self.endpoint_rows.read(read, _sealed(row), row["key_id"], row["signature"])

    def _proven(self, rows: Sequence[asyncpg.Record]) -> list[Endpoint]:
        """The rows that are endpoints (the others told, and left out)."""
        return [e for e in map(self._endpoint, rows) if not self.endpoint_rows.refused(e)]

    def _row_values(self, endpoint: Endpoint, secret: SealedSecret) -> tuple[str, bytes, str, str]:
        """The sealed secret's and the proof's columns of `endpoint` as it is written now."""
        proof = self.endpoint_rows.sign(endpoint, secret)
        return secret.key_id, secret.ciphertext, proof.key_id, proof.signature

    async def remember_message(self, tenant_id: str, endpoint_id: str, message_id: str) -> bool:
        """Record an inbound message id of an endpoint; False when seen before (a replay)."""
        done = await self.pool.fetchval(
            f"INSERT INTO {self.s}.inbound_messages (tenant_id, endpoint_id, message_id) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING RETURNING message_id",
            tenant_id,
            endpoint_id,
            message_id,
        )
        return done is not None

    async def upsert_endpoint(self, endpoint: Endpoint) -> None:
        """Create or replace the endpoint of its tenant with its id (the key is the pair: never another tenant's).

        Its secret is sealed and the row signed by this process's key (the clear `secret` column stays empty). A row that
        was enabled and refused, registered again enabled, is marked as owed the messages it missed (`owed_due`).
        """
        sealed = self.endpoint_rows.sealed(endpoint.tenant_id, endpoint.endpoint_id, endpoint.secret)
        async with self.pool.acquire() as conn, conn.transaction():
            before = await conn.fetchrow(
                f"SELECT * FROM {self.s}.webhook_endpoints WHERE tenant_id = $1 AND endpoint_id = $2 FOR UPDATE",
                endpoint.tenant_id,
                endpoint.endpoint_id,
            )
            owed = before is not None and before["enabled"] and endpoint.enabled and self._endpoint(before).unproven is not None
            await conn.execute(
                f"INSERT INTO {self.s}.webhook_endpoints (endpoint_id, url, secret, tenant_id, approvers, enabled, source, "
                "secret_key_id, secret_sealed, key_id, signature) VALUES ($1, $2, NULL, $3, $4, $5, $6, $7, $8, $9, $10) "
                "ON CONFLICT (tenant_id, endpoint_id) DO UPDATE SET url = EXCLUDED.url, secret = NULL, approvers = EXCLUDED.approvers, "
                "enabled = EXCLUDED.enabled, source = EXCLUDED.source, secret_key_id = EXCLUDED.secret_key_id, "
                "secret_sealed = EXCLUDED.secret_sealed, key_id = EXCLUDED.key_id, signature = EXCLUDED.signature, "
                f"owed_due = EXCLUDED.enabled AND ({self.s}.webhook_endpoints.owed_due OR $11)",
                endpoint.endpoint_id,
                endpoint.url,
                endpoint.tenant_id,
                list(endpoint.approvers),
                endpoint.enabled,
                endpoint.source,
                *self._row_values(endpoint, sealed),
                owed,
            )

    async def endpoint(self, tenant_id: str, endpoint_id: str) -> Endpoint | None:
        """One endpoint of a tenant (None too for a row that is refused: told, and no endpoint)."""
        row = await self.pool.fetchrow(
            f"SELECT * FROM {self.s}.webhook_endpoints WHERE tenant_id = $1 AND endpoint_id = $2", tenant_id, endpoint_id
        )
        return next(iter(self._proven([row])), None) if row else None

    async def set_endpoint_approver(
        self, tenant_id: str, endpoint_id: str, approver: str, *, url: str, secret: str, enrolled: bool
    ) -> Endpoint | None:
        """Add or remove an approver, the row re-signed, if it is proven and still has this URL and secret.

        The row is locked while it changes: two enrolling at once both stay.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"SELECT * FROM {self.s}.webhook_endpoints WHERE tenant_id = $1 AND endpoint_id = $2 FOR UPDATE", tenant_id, endpoint_id
            )
            found = next(iter(self._proven([row])), None) if row else None
            sealed = _sealed(row) if row else None
            if found is None or sealed is None or (found.url, found.secret) != (url, secret):
                return None
            others = tuple(a for a in found.approvers if a != approver)
            changed = replace(found, approvers=(*others, approver) if enrolled else others)
            await conn.execute(
                f"UPDATE {self.s}.webhook_endpoints SET approvers = $3, key_id = $4, signature = $5 "
                "WHERE tenant_id = $1 AND endpoint_id = $2",
                tenant_id,
                endpoint_id,
                list(changed.approvers),
                *self._row_values(changed, sealed)[2:],
            )
        return changed

    async def endpoints_named(self, endpoint_id: str) -> list[Endpoint]:
        """Every tenant's endpoint with this id, enabled or not (the refused ones told, and left out)."""
        rows = await self.pool.fetch(f"SELECT * FROM {self.s}.webhook_endpoints WHERE endpoint_id = $1 ORDER BY tenant_id", endpoint_id)
        return self._proven(rows)

    async def endpoints(self, tenant_id: str | None = None) -> list[Endpoint]:
        """Enabled, proven endpoints for a tenant (its own and `*`: the refused ones told, and left out), or all (with `unproven`)."""
        rows = await self.pool.fetch(
            f"SELECT * FROM {self.s}.webhook_endpoints WHERE ($1::text IS NULL OR (enabled AND tenant_id IN ($1, '*'))) "
            "ORDER BY tenant_id, endpoint_id",
            tenant_id,
        )
        return [self._endpoint(r) for r in rows] if tenant_id is None else self._proven(rows)

    async def endpoints_of(self, tenant_id: str) -> list[Endpoint]:
        """The endpoints that belong to a tenant (for `*`: the operator's), enabled or not, each with `unproven` when refused."""
        rows = await self.pool.fetch(f"SELECT * FROM {self.s}.webhook_endpoints WHERE tenant_id = $1 ORDER BY endpoint_id", tenant_id)
        return [self._endpoint(r) for r in rows]

    async def claim_due_deliveries(
        self, now: datetime, lease: timedelta, limit: int = 50, per_endpoint: int = 5
    ) -> list[tuple[Delivery, Endpoint]]:
        """Pending deliveries due now, at most `per_endpoint` of each endpoint, leased (next attempt pushed out).

        A row another copy claims meanwhile is skipped: the update waits for its lock, then finds it no longer due.
        The pending messages of an endpoint whose row is refused are failed, with why, never sent.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"UPDATE {self.s}.webhook_deliveries d SET next_attempt_at = $2 FROM (SELECT delivery_id, turn, due_at FROM ("
                "SELECT delivery_id, next_attempt_at AS due_at, row_number() OVER (PARTITION BY tenant_id, endpoint_id "
                f"ORDER BY next_attempt_at, created_at) AS turn FROM {self.s}.webhook_deliveries w "
                "WHERE status = 'pending' AND next_attempt_at <= $1 "
                f"AND EXISTS (SELECT 1 FROM {self.s}.webhook_endpoints e WHERE e.tenant_id = w.tenant_id AND e.endpoint_id = w.endpoint_id "
                "AND e.enabled)) ranked WHERE turn <= $4 ORDER BY turn, due_at LIMIT $3) due "
                "WHERE d.delivery_id = due.delivery_id AND d.status = 'pending' AND d.next_attempt_at <= $1 "
                "RETURNING d.*, due.turn, due.due_at",
                now,
                now + lease,
                limit,
                per_endpoint,
            )
            result = []
            for row in sorted(rows, key=lambda r: (r["turn"], r["due_at"])):  # each endpoint's in the order they fell due
                ep = await conn.fetchrow(  # an endpoint removed since the ranking: its deliveries are failed, never sent
                    f"SELECT * FROM {self.s}.webhook_endpoints WHERE tenant_id = $1 AND endpoint_id = $2 AND enabled",
                    row["tenant_id"],
                    row["endpoint_id"],
                )
                endpoint = self._endpoint(ep) if ep is not None else None
                if endpoint is not None and endpoint.unproven is not None:
                    await self._fail_refused(conn, endpoint)
                elif endpoint is not None:
                    result.append((_delivery(row), endpoint))
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
    ) -> None:
        """Log one attempt (numbered after those before a re-queue) and move the delivery on, if it is still pending."""
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
            await conn.execute(
                f"UPDATE {self.s}.webhook_deliveries SET attempts = $2, status = $3, last_status_code = $4, last_error = $5, "
                "next_attempt_at = COALESCE($6, next_attempt_at), delivered_at = CASE WHEN $3 = 'delivered' THEN now() ELSE "
                "delivered_at END "
                "WHERE delivery_id = $1 AND status = 'pending'",
                delivery_id,
                attempt,
                outcome,
                status_code,
                error,
                next_at,
            )

    async def remove_endpoint(self, tenant_id: str, endpoint_id: str, reason: str) -> Endpoint | None:
        """Disable the endpoint, drop its approvers and fail its pending deliveries, in one transaction.

        A proven row is signed again as it now is; one that is refused stays refused (its proof is dropped, never laundered).
        """
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"SELECT * FROM {self.s}.webhook_endpoints WHERE tenant_id = $1 AND endpoint_id = $2 FOR UPDATE", tenant_id, endpoint_id
            )
            if row is None:
                return None
            found, sealed = self._endpoint(row), _sealed(row)
            removed = replace(found, enabled=False, approvers=())
            proof = self._row_values(removed, sealed)[2:] if found.unproven is None and sealed is not None else (None, None)
            await conn.execute(
                f"UPDATE {self.s}.webhook_endpoints SET enabled = false, approvers = '{{}}', key_id = $3, signature = $4, owed_due = false "
                "WHERE tenant_id = $1 AND endpoint_id = $2",
                tenant_id,
                endpoint_id,
                *proof,
            )
            await conn.execute(
                f"UPDATE {self.s}.webhook_deliveries SET status = 'failed', last_error = $3 "
                "WHERE tenant_id = $1 AND endpoint_id = $2 AND status = 'pending'",
                tenant_id,
                endpoint_id,
                reason,
            )
        return removed

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
                    f"status, next_attempt_at) SELECT $5, $2, $1, $6, $7, $8, 'pending', now() FROM {self.s}.approvals a "
                    f"WHERE a.approval_id = $6 AND {self._owed('$1', '$2')} ON CONFLICT DO NOTHING RETURNING delivery_id",
                    endpoint.tenant_id,
                    endpoint.endpoint_id,
                    now,
                    REFUSED_UNSENT,
                    d.delivery_id,
                    d.approval_id,
                    d.event_type,
                    d.body,
                )
                written += done is not None
            await conn.execute(
                f"UPDATE {self.s}.webhook_endpoints SET owed_due = false WHERE tenant_id = $1 AND endpoint_id = $2",
                endpoint.tenant_id,
                endpoint.endpoint_id,
            )
        return written

    async def delivery(self, delivery_id: str) -> Delivery | None:
        """One delivery."""
        row = await self.pool.fetchrow(f"SELECT * FROM {self.s}.webhook_deliveries WHERE delivery_id = $1", delivery_id)
        return _delivery(row) if row else None

    async def requeue_delivery(self, delivery_id: str, now: datetime) -> Delivery | None:
        """A failed delivery to an enabled endpoint made pending again (the endpoint row locked: a removal waits, then fails it)."""
        row = await self.pool.fetchrow(
            f"UPDATE {self.s}.webhook_deliveries d SET status = 'pending', attempts = 0, next_attempt_at = $2 "
            f"FROM {self.s}.webhook_endpoints e WHERE d.delivery_id = $1 AND d.status = 'failed' AND e.tenant_id = d.tenant_id "
            "AND e.endpoint_id = d.endpoint_id AND e.enabled RETURNING d.*",
            delivery_id,
            now,
        )
        return _delivery(row) if row else None

    async def attempts_of(self, delivery_id: str) -> list[Attempt]:
        """The attempts logged for a delivery, in order."""
        rows = await self.pool.fetch(f"SELECT * FROM {self.s}.webhook_attempts WHERE delivery_id = $1 ORDER BY attempt", delivery_id)
        return [_attempt(r) for r in rows]

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
        return [_delivery(r) for r in rows]


@dataclass
class InMemoryWebhookStore(WebhookStore):
    """The in-memory twin's part."""

    messages: set[tuple[str, str, str]] = field(default_factory=set)
    endpoint_rows: dict[tuple[str, str], Endpoint] = field(default_factory=dict)
    owed_due: set[tuple[str, str]] = field(default_factory=set)
    records: dict[str, ApprovalRecord] = field(default_factory=dict)  # the requests (the repository's part keeps them)
    delivery_rows: dict[str, Delivery] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)

    async def remember_message(self, tenant_id: str, endpoint_id: str, message_id: str) -> bool:
        """Record an inbound message id."""
        if (tenant_id, endpoint_id, message_id) in self.messages:
            return False
        self.messages.add((tenant_id, endpoint_id, message_id))
        return True

    async def upsert_endpoint(self, endpoint: Endpoint) -> None:
        """Create or replace the endpoint of its tenant with its id; one enabled and refused before is marked as owed."""
        key = endpoint.tenant_id, endpoint.endpoint_id
        before = self.endpoint_rows.get(key)
        if before is not None and before.enabled and before.unproven is not None and endpoint.enabled:
            self.owed_due.add(key)
        elif not endpoint.enabled:
            self.owed_due.discard(key)
        self.endpoint_rows[key] = endpoint

    async def endpoint(self, tenant_id: str, endpoint_id: str) -> Endpoint | None:
        """One endpoint of a tenant."""
        return self.endpoint_rows.get((tenant_id, endpoint_id))

    async def set_endpoint_approver(
        self, tenant_id: str, endpoint_id: str, approver: str, *, url: str, secret: str, enrolled: bool
    ) -> Endpoint | None:
        """Add or remove an approver, if the endpoint still has this URL and secret."""
        found = self.endpoint_rows.get((tenant_id, endpoint_id))
        if found is None or (found.url, found.secret) != (url, secret):
            return None
        others = tuple(a for a in found.approvers if a != approver)
        changed = self.endpoint_rows[tenant_id, endpoint_id] = replace(found, approvers=(*others, approver) if enrolled else others)
        return changed

    async def endpoints_named(self, endpoint_id: str) -> list[Endpoint]:
        """Every tenant's endpoint with this id."""
        return sorted((e for e in self.endpoint_rows.values() if e.endpoint_id == endpoint_id), key=lambda e: e.tenant_id)

    async def endpoints(self, tenant_id: str | None = None) -> list[Endpoint]:
        """Enabled endpoints for a tenant, or all."""
        return [e for e in self.endpoint_rows.values() if tenant_id is None or (e.enabled and e.tenant_id in (tenant_id, "*"))]

    async def endpoints_of(self, tenant_id: str) -> list[Endpoint]:
        """The endpoints that belong to a tenant."""
        return sorted((e for e in self.endpoint_rows.values() if e.tenant_id == tenant_id), key=lambda e: e.endpoint_id)

    async def claim_due_deliveries(
        self, now: datetime, lease: timedelta, limit: int = 50, per_endpoint: int = 5
    ) -> list[tuple[Delivery, Endpoint]]:
        """Pending deliveries due now, at most `per_endpoint` of each endpoint, leased."""
        turns: dict[tuple[str, str], int] = {}
        ranked = []
        for d in sorted(self.delivery_rows.values(), key=lambda d: d.next_attempt_at or now):
            if d.status == "pending" and d.next_attempt_at is not None and d.next_attempt_at <= now and self._enabled(d):
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
    ) -> None:
        """Log one attempt and move the delivery on, if it is still pending."""
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

    async def remove_endpoint(self, tenant_id: str, endpoint_id: str, reason: str) -> Endpoint | None:
        """Disable the endpoint, drop its approvers and fail its pending deliveries."""
        found = self.endpoint_rows.get((tenant_id, endpoint_id))
        if found is None:
            return None
        removed = self.endpoint_rows[tenant_id, endpoint_id] = replace(found, enabled=False, approvers=())
        self.owed_due.discard((tenant_id, endpoint_id))
        for d in list(self.delivery_rows.values()):
            if (d.tenant_id, d.endpoint_id, d.status) == (tenant_id, endpoint_id, "pending"):
                self.delivery_rows[d.delivery_id] = replace(d, status="failed", last_error=reason)
        return removed

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

    def _enabled(self, d: Delivery) -> bool:
        endpoint = self.endpoint_rows.get((d.tenant_id, d.endpoint_id))
        return endpoint is not None and endpoint.enabled

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
