"""Where the approval service keeps its state: a Protocol, its asyncpg implementation, an in-memory twin.

Every change of a request is a conditional write (`... WHERE version = $old AND status = 'pending'`),
so two humans acting at the same moment cannot both settle it: one write wins, the other sees the
new state. Events to publish and webhook messages are written in the same transaction (outbox).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import asyncpg

from services.approval.domain import ApprovalRecord

DEFAULT_TOKEN_TTL = timedelta(days=30)  # what the schema gives a token inserted without an expiry (migration 002)

__all__ = [
    "ApprovalRepository",
    "Delivery",
    "Endpoint",
    "InMemoryApprovalRepository",
    "OutboxItem",
    "PgApprovalRepository",
    "TaskEvent",
    "TokenInfo",
]


@dataclass(frozen=True)
class OutboxItem:
    """An event to publish on `topic`, encoded."""

    event_id: str
    approval_id: str
    topic: str
    payload: str


@dataclass(frozen=True)
class Delivery:
    """A webhook message for one endpoint; `delivery_id` is its `webhook-id`."""

    delivery_id: str
    endpoint_id: str
    approval_id: str
    event_type: str
    body: str
    status: str = "pending"
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None


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


@dataclass(frozen=True)
class TaskEvent:
    """A decision or result of a task, as the service saw it."""

    event_id: str
    tenant_id: str
    task_id: str
    action_id: str
    type: str
    tool: str
    at: datetime
    outcome: str | None = None
    cost_usd: float = 0.0
    requested_by: str | None = None
    risk: str | None = None
    args: dict[str, Any] | None = None
    summary: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for the API."""
        return {
            "event_id": self.event_id,
            "type": self.type,
            "action_id": self.action_id,
            "tool": self.tool,
            "outcome": self.outcome,
            "cost_usd": self.cost_usd,
            "summary": self.summary,
            "at": self.at.isoformat(),
        }


@dataclass(frozen=True)
class TokenInfo:
    """An approver token as stored (never the token itself)."""

    token_id: str
    approver: str
    tenant_id: str
    groups: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    expires_at: datetime | None = None
    operator: bool = False


class ApprovalRepository(Protocol):
    """The approval service's storage."""

    async def insert_request(
        self, record: ApprovalRecord, outbox: Sequence[OutboxItem], deliveries: Sequence[Delivery]
    ) -> ApprovalRecord | None:
        """Store a new request; None when one exists for the same action and kind (idempotent)."""
        ...

    async def get(self, approval_id: str) -> ApprovalRecord | None:
        """One request."""
        ...

    async def get_by_action(self, action_id: str, kind: str = "approval") -> ApprovalRecord | None:
        """The request of an action."""
        ...

    async def search(
        self, *, tenant_id: str | None, status: str | None, tool: str | None = None, reason: str | None = None, limit: int = 200
    ) -> list[ApprovalRecord]:
        """Requests, newest first, filtered."""
        ...

    async def save(self, old_version: int, record: ApprovalRecord, outbox: Sequence[OutboxItem], deliveries: Sequence[Delivery]) -> bool:
        """Write `record` only if the stored one is still pending at `old_version`; False if someone else won."""
        ...

    async def overdue(self, now: datetime) -> list[ApprovalRecord]:
        """Pending requests past their expiry."""
        ...

    async def due_for_escalation(self, before: datetime) -> list[ApprovalRecord]:
        """Pending, not yet escalated requests created before `before`."""
        ...

    async def unpublished(self, older_than: datetime) -> list[OutboxItem]:
        """Outbox items not yet published, created before `older_than`."""
        ...

    async def mark_published(self, event_id: str) -> None:
        """Record that an outbox item is on the bus."""
        ...

    async def add_token(
        self,
        token_sha256: str,
        approver: str,
        tenant_id: str,
        groups: Sequence[str],
        *,
        expires_at: datetime | None = None,
        operator: bool = False,
    ) -> TokenInfo:
        """Store a token's hash for an approver, expiring at `expires_at` (None: 30 days from now); an operator token is tenant `*`."""
        ...

    async def token(self, token_sha256: str) -> TokenInfo | None:
        """The live (not revoked, not expired) token with this hash; marks it used."""
        ...

    async def rotate_token(self, token_id: str, new_sha256: str, expires_at: datetime) -> TokenInfo | None:
        """Revoke a live token and store its successor (same approver, tenant, groups) at once; None when not live."""
        ...

    async def is_registered(self, approver: str, tenant_id: str) -> bool:
        """Whether `approver` holds a live token of exactly this tenant."""
        ...

    async def tokens(self) -> list[TokenInfo]:
        """Every token."""
        ...

    async def revoke_token(self, token_id: str) -> bool:
        """Revoke a token; False when unknown or already revoked."""
        ...

    async def groups_of(self, approver: str, tenant_id: str) -> set[str]:
        """Union of the groups of an approver's live tokens in a tenant (empty: not a registered approver)."""
        ...

    async def spend_link(self, link_id: str, approval_id: str, approver: str) -> bool:
        """Record a link as used; False when it was used before."""
        ...

    async def remember_message(self, endpoint_id: str, message_id: str) -> bool:
        """Record an inbound message id; False when seen before (a replay)."""
        ...

    async def upsert_endpoint(self, endpoint: Endpoint, *, within_tenant: bool = False) -> bool:
        """Create or replace an endpoint; with `within_tenant`, one of another tenant is left alone (False)."""
        ...

    async def endpoint(self, endpoint_id: str) -> Endpoint | None:
        """One endpoint."""
        ...

    async def endpoints(self, tenant_id: str | None = None) -> list[Endpoint]:
        """Enabled endpoints for a tenant (its own and `*`), or all."""
        ...

    async def endpoints_of(self, tenant_id: str) -> list[Endpoint]:
        """The endpoints that belong to a tenant (for `*`: the operator's), enabled or not."""
        ...

    async def claim_due_deliveries(self, now: datetime, lease: timedelta, limit: int = 20) -> list[tuple[Delivery, Endpoint]]:
        """Pending deliveries due now, leased so that another copy of the service does not send them too."""
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
        """Log one attempt and move the delivery on (`delivered`, `failed`, or `pending` until `next_at`)."""
        ...

    async def deliveries(self, approval_id: str | None = None, limit: int = 200, *, tenant_id: str | None = None) -> list[Delivery]:
        """The delivery log, newest first (with `tenant_id`: only messages to that tenant's endpoints)."""
        ...

    async def record_task_event(self, event: TaskEvent) -> None:
        """Keep a decision or result (idempotent by event id)."""
        ...

    async def task_events(self, tenant_id: str, task_id: str) -> list[TaskEvent]:
        """What the service saw of a task, oldest first."""
        ...

    async def action_event(self, action_id: str, type_: str) -> TaskEvent | None:
        """The latest event of a type for an action."""
        ...


def _record(row: asyncpg.Record) -> ApprovalRecord:
    return ApprovalRecord.model_validate_json(row["record"])


def _delivery(row: asyncpg.Record) -> Delivery:
    return Delivery(
        delivery_id=row["delivery_id"],
        endpoint_id=row["endpoint_id"],
        approval_id=row["approval_id"],
        event_type=row["event_type"],
        body=row["body"],
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        delivered_at=row["delivered_at"],
    )


def _endpoint(row: asyncpg.Record) -> Endpoint:
    return Endpoint(
        endpoint_id=row["endpoint_id"],
        url=row["url"],
        secret=row["secret"],
        tenant_id=row["tenant_id"],
        approvers=tuple(row["approvers"]),
        enabled=row["enabled"],
        source=row["source"],
    )


def _token(row: asyncpg.Record) -> TokenInfo:
    return TokenInfo(
        token_id=row["token_id"],
        approver=row["approver"],
        tenant_id=row["tenant_id"],
        groups=tuple(row["groups"]),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
        expires_at=row["expires_at"],
        operator=row["operator"],
    )


def _task_event(row: asyncpg.Record) -> TaskEvent:
    return TaskEvent(
        event_id=row["event_id"],
        tenant_id=row["tenant_id"],
        task_id=row["task_id"],
        action_id=row["action_id"],
        type=row["type"],
        tool=row["tool"],
        at=row["at"],
        outcome=row["outcome"],
        cost_usd=row["cost_usd"],
        requested_by=row["requested_by"],
        risk=row["risk"],
        args=json.loads(row["args"]) if row["args"] else None,
        summary=row["summary"],
    )


class PgApprovalRepository:
    """PostgreSQL storage in the `approval` schema (tables qualified, so any search_path works)."""

    def __init__(self, pool: asyncpg.Pool, schema: str = "approval") -> None:
        self.pool = pool
        self.s = f'"{schema}"'

    async def _write_side(self, conn: Any, outbox: Sequence[OutboxItem], deliveries: Sequence[Delivery]) -> None:
        for item in outbox:
            await conn.execute(
                f"INSERT INTO {self.s}.outbox (event_id, approval_id, topic, payload) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                item.event_id,
                item.approval_id,
                item.topic,
                item.payload,
            )
        for d in deliveries:
            await conn.execute(
                f"INSERT INTO {self.s}.webhook_deliveries (delivery_id, endpoint_id, approval_id, event_type, body, status, "
                "next_attempt_at) "
                "VALUES ($1, $2, $3, $4, $5, 'pending', now()) ON CONFLICT DO NOTHING",
                d.delivery_id,
                d.endpoint_id,
                d.approval_id,
                d.event_type,
                d.body,
            )

    async def insert_request(
        self, record: ApprovalRecord, outbox: Sequence[OutboxItem], deliveries: Sequence[Delivery]
    ) -> ApprovalRecord | None:
        """Store a new request; None when one exists for the same action and kind (idempotent)."""
        async with self.pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                f"INSERT INTO {self.s}.approvals (approval_id, kind, action_id, task_id, tenant_id, tool, status, version, "
                "created_at, expires_at, record) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (action_id, kind) DO NOTHING RETURNING approval_id",
                record.approval_id,
                record.kind,
                record.action_id,
                record.task_id,
                record.tenant_id,
                record.tool,
                record.status,
                record.version,
                record.created_at,
                record.expires_at,
                record.model_dump_json(),
            )
            if inserted is None:
                return None
            await self._write_side(conn, outbox, deliveries)
        return record

    async def get(self, approval_id: str) -> ApprovalRecord | None:
        """One request."""
        row = await self.pool.fetchrow(f"SELECT record FROM {self.s}.approvals WHERE approval_id = $1", approval_id)
        return _record(row) if row else None

    async def get_by_action(self, action_id: str, kind: str = "approval") -> ApprovalRecord | None:
        """The request of an action."""
        row = await self.pool.fetchrow(f"SELECT record FROM {self.s}.approvals WHERE action_id = $1 AND kind = $2", action_id, kind)
        return _record(row) if row else None

    async def search(
        self, *, tenant_id: str | None, status: str | None, tool: str | None = None, reason: str | None = None, limit: int = 200
    ) -> list[ApprovalRecord]:
        """Requests, newest first, filtered (reason: any of the request's reason codes)."""
        rows = await self.pool.fetch(
            f"SELECT record FROM {self.s}.approvals WHERE ($1::text IS NULL OR tenant_id = $1) AND ($2::text IS NULL OR status = $2) "
            "AND ($3::text IS NULL OR tool = $3) "
            "AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM jsonb_array_elements(record->'reasons') r WHERE r->>'code' = $4)) "
            "ORDER BY created_at DESC LIMIT $5",
            tenant_id,
            status,
            tool,
            reason,
            limit,
        )
        return [_record(r) for r in rows]

    async def save(self, old_version: int, record: ApprovalRecord, outbox: Sequence[OutboxItem], deliveries: Sequence[Delivery]) -> bool:
        """Conditional update: only a still-pending row at `old_version` changes (one winner under concurrency)."""
        async with self.pool.acquire() as conn, conn.transaction():
            won = await conn.fetchval(
                f"UPDATE {self.s}.approvals SET status = $2, version = $3, escalated_at = $4, record = $5 "
                "WHERE approval_id = $1 AND version = $6 AND status = 'pending' RETURNING approval_id",
                record.approval_id,
                record.status,
                record.version,
                record.escalated_at,
                record.model_dump_json(),
                old_version,
            )
            if won is None:
                return False
            await self._write_side(conn, outbox, deliveries)
        return True

    async def overdue(self, now: datetime) -> list[ApprovalRecord]:
        """Pending requests past their expiry."""
        rows = await self.pool.fetch(f"SELECT record FROM {self.s}.approvals WHERE status = 'pending' AND expires_at <= $1 LIMIT 500", now)
        return [_record(r) for r in rows]

    async def due_for_escalation(self, before: datetime) -> list[ApprovalRecord]:
        """Pending, not yet escalated requests created before `before`."""
        rows = await self.pool.fetch(
            f"SELECT record FROM {self.s}.approvals WHERE status = 'pending' AND escalated_at IS NULL AND kind = 'approval' "
            "AND created_at <= $1 LIMIT 500",
            before,
        )
        return [_record(r) for r in rows]

    async def unpublished(self, older_than: datetime) -> list[OutboxItem]:
        """Outbox items not yet published, created before `older_than`."""
        rows = await self.pool.fetch(
            f"SELECT event_id, approval_id, topic, payload FROM {self.s}.outbox WHERE published_at IS NULL AND created_at "
            "<= $1 ORDER BY created_at LIMIT 500",
            older_than,
        )
        return [OutboxItem(r["event_id"], r["approval_id"], r["topic"], r["payload"]) for r in rows]

    async def mark_published(self, event_id: str) -> None:
        """Record that an outbox item is on the bus."""
        await self.pool.execute(f"UPDATE {self.s}.outbox SET published_at = now() WHERE event_id = $1 AND published_at IS NULL", event_id)

    async def add_token(
        self,
        token_sha256: str,
        approver: str,
        tenant_id: str,
        groups: Sequence[str],
        *,
        expires_at: datetime | None = None,
        operator: bool = False,
    ) -> TokenInfo:
        """Store a token's hash for an approver (an operator token is tenant `*`)."""
        async with self.pool.acquire() as conn:
            return await self._add_token(conn, token_sha256, approver, tenant_id, groups, expires_at, operator)

    async def _add_token(
        self, conn: Any, sha: str, approver: str, tenant_id: str, groups: Sequence[str], expires_at: datetime | None, operator: bool
    ) -> TokenInfo:
        if operator != (tenant_id == "*"):
            raise ValueError("an operator token is tenant '*', and only an operator token is")
        row = await conn.fetchrow(
            f"INSERT INTO {self.s}.approver_tokens (token_id, token_sha256, approver, tenant_id, groups, expires_at, operator) "
            f"VALUES ($1, $2, $3, $4, $5, COALESCE($6, now() + interval '{DEFAULT_TOKEN_TTL.days} days'), $7) RETURNING *",
            "tok_" + secrets.token_hex(6),
            sha,
            approver,
            tenant_id,
            list(groups),
            expires_at,
            operator,
        )
        assert row is not None  # RETURNING of a successful INSERT
        return _token(row)

    async def token(self, token_sha256: str) -> TokenInfo | None:
        """The live (not revoked, not expired) token with this hash; marks it used."""
        row = await self.pool.fetchrow(
            f"UPDATE {self.s}.approver_tokens SET last_used_at = now() WHERE token_sha256 = $1 AND revoked_at IS NULL "
            "AND expires_at > now() RETURNING *",
            token_sha256,
        )
        return _token(row) if row else None

    async def rotate_token(self, token_id: str, new_sha256: str, expires_at: datetime) -> TokenInfo | None:
        """Revoke a live token and store its successor (same approver, tenant, groups) in one transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            old = await conn.fetchrow(
                f"UPDATE {self.s}.approver_tokens SET revoked_at = now() WHERE token_id = $1 AND revoked_at IS NULL "
                "AND expires_at > now() RETURNING *",
                token_id,
            )
            if old is None:
                return None
            return await self._add_token(conn, new_sha256, old["approver"], old["tenant_id"], old["groups"], expires_at, old["operator"])

    async def is_registered(self, approver: str, tenant_id: str) -> bool:
        """Whether `approver` holds a live token of exactly this tenant."""
        found = await self.pool.fetchval(
            f"SELECT 1 FROM {self.s}.approver_tokens WHERE approver = $1 AND tenant_id = $2 AND revoked_at IS NULL "
            "AND expires_at > now() LIMIT 1",
            approver,
            tenant_id,
        )
        return found is not None

    async def tokens(self) -> list[TokenInfo]:
        """Every token."""
        return [_token(r) for r in await self.pool.fetch(f"SELECT * FROM {self.s}.approver_tokens ORDER BY created_at")]

    async def revoke_token(self, token_id: str) -> bool:
        """Revoke a token; False when unknown or already revoked."""
        done = await self.pool.fetchval(
            f"UPDATE {self.s}.approver_tokens SET revoked_at = now() WHERE token_id = $1 AND revoked_at IS NULL RETURNING token_id",
            token_id,
        )
        return done is not None

    async def groups_of(self, approver: str, tenant_id: str) -> set[str]:
        """Union of the groups of an approver's live tokens in a tenant."""
        rows = await self.pool.fetch(
            f"SELECT groups FROM {self.s}.approver_tokens WHERE approver = $1 AND tenant_id IN ($2, '*') AND revoked_at IS NULL "
            "AND expires_at > now()",
            approver,
            tenant_id,
        )
        return {g for r in rows for g in r["groups"]}

    async def spend_link(self, link_id: str, approval_id: str, approver: str) -> bool:
        """Record a link as used; False when it was used before."""
        done = await self.pool.fetchval(
            f"INSERT INTO {self.s}.used_links (link_id, approval_id, approver) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING "
            "RETURNING link_id",
            link_id,
            approval_id,
            approver,
        )
        return done is not None

    async def remember_message(self, endpoint_id: str, message_id: str) -> bool:
        """Record an inbound message id; False when seen before (a replay)."""
        done = await self.pool.fetchval(
            f"INSERT INTO {self.s}.inbound_messages (endpoint_id, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING message_id",
            endpoint_id,
            message_id,
        )
        return done is not None

    async def upsert_endpoint(self, endpoint: Endpoint, *, within_tenant: bool = False) -> bool:
        """Create or replace an endpoint; with `within_tenant`, one of another tenant is left alone (False), atomically."""
        done = await self.pool.fetchval(
            f"INSERT INTO {self.s}.webhook_endpoints AS e (endpoint_id, url, secret, tenant_id, approvers, enabled, source) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) "
            "ON CONFLICT (endpoint_id) DO UPDATE SET url = EXCLUDED.url, secret = EXCLUDED.secret, tenant_id = EXCLUDED.tenant_id, "
            "approvers = EXCLUDED.approvers, enabled = EXCLUDED.enabled, source = EXCLUDED.source "
            "WHERE NOT $8 OR e.tenant_id = EXCLUDED.tenant_id RETURNING endpoint_id",
            endpoint.endpoint_id,
            endpoint.url,
            endpoint.secret,
            endpoint.tenant_id,
            list(endpoint.approvers),
            endpoint.enabled,
            endpoint.source,
            within_tenant,
        )
        return done is not None

    async def endpoint(self, endpoint_id: str) -> Endpoint | None:
        """One endpoint."""
        row = await self.pool.fetchrow(f"SELECT * FROM {self.s}.webhook_endpoints WHERE endpoint_id = $1", endpoint_id)
        return _endpoint(row) if row else None

    async def endpoints(self, tenant_id: str | None = None) -> list[Endpoint]:
        """Enabled endpoints for a tenant (its own and `*`), or all."""
        rows = await self.pool.fetch(
            f"SELECT * FROM {self.s}.webhook_endpoints WHERE ($1::text IS NULL OR (enabled AND tenant_id IN ($1, '*'))) "
            "ORDER BY endpoint_id",
            tenant_id,
        )
        return [_endpoint(r) for r in rows]

    async def endpoints_of(self, tenant_id: str) -> list[Endpoint]:
        """The endpoints that belong to a tenant (for `*`: the operator's), enabled or not."""
        rows = await self.pool.fetch(f"SELECT * FROM {self.s}.webhook_endpoints WHERE tenant_id = $1 ORDER BY endpoint_id", tenant_id)
        return [_endpoint(r) for r in rows]

    async def claim_due_deliveries(self, now: datetime, lease: timedelta, limit: int = 20) -> list[tuple[Delivery, Endpoint]]:
        """Pending deliveries due now, leased (next attempt pushed out) under SKIP LOCKED."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"UPDATE {self.s}.webhook_deliveries d SET next_attempt_at = $2 WHERE delivery_id IN ("
                f"SELECT delivery_id FROM {self.s}.webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1 "
                "ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING d.*",
                now,
                now + lease,
                limit,
            )
            result = []
            for row in rows:
                ep = await conn.fetchrow(f"SELECT * FROM {self.s}.webhook_endpoints WHERE endpoint_id = $1", row["endpoint_id"])
                if ep is not None:
                    result.append((_delivery(row), _endpoint(ep)))
        return result

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
        """Log one attempt and move the delivery on."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO {self.s}.webhook_attempts (delivery_id, attempt, status_code, error, duration_ms) VALUES ($1, $2, "
                "$3, $4, $5) "
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
                "WHERE delivery_id = $1",
                delivery_id,
                attempt,
                outcome,
                status_code,
                error,
                next_at,
            )

    async def deliveries(self, approval_id: str | None = None, limit: int = 200, *, tenant_id: str | None = None) -> list[Delivery]:
        """The delivery log, newest first (with `tenant_id`: only messages to that tenant's endpoints)."""
        rows = await self.pool.fetch(
            f"SELECT * FROM {self.s}.webhook_deliveries WHERE ($1::text IS NULL OR approval_id = $1) AND ($3::text IS NULL OR "
            f"endpoint_id IN (SELECT endpoint_id FROM {self.s}.webhook_endpoints WHERE tenant_id = $3)) ORDER BY created_at DESC LIMIT $2",
            approval_id,
            limit,
            tenant_id,
        )
        return [_delivery(r) for r in rows]

    async def record_task_event(self, event: TaskEvent) -> None:
        """Keep a decision or result (idempotent by event id)."""
        await self.pool.execute(
            f"INSERT INTO {self.s}.task_events (event_id, tenant_id, task_id, action_id, type, tool, outcome, cost_usd, "
            "requested_by, risk, args, summary, at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT DO NOTHING",
            event.event_id,
            event.tenant_id,
            event.task_id,
            event.action_id,
            event.type,
            event.tool,
            event.outcome,
            event.cost_usd,
            event.requested_by,
            event.risk,
            json.dumps(event.args) if event.args is not None else None,
            event.summary,
            event.at,
        )

    async def task_events(self, tenant_id: str, task_id: str) -> list[TaskEvent]:
        """What the service saw of a task, oldest first."""
        rows = await self.pool.fetch(
            f"SELECT * FROM {self.s}.task_events WHERE tenant_id = $1 AND task_id = $2 ORDER BY at, event_id", tenant_id, task_id
        )
        return [_task_event(r) for r in rows]

    async def action_event(self, action_id: str, type_: str) -> TaskEvent | None:
        """The latest event of a type for an action."""
        row = await self.pool.fetchrow(
            f"SELECT * FROM {self.s}.task_events WHERE action_id = $1 AND type = $2 ORDER BY at DESC LIMIT 1", action_id, type_
        )
        return _task_event(row) if row else None


@dataclass
class InMemoryApprovalRepository:
    """The in-memory twin, for unit tests; a lock stands in for PostgreSQL's row locks."""

    records: dict[str, ApprovalRecord] = field(default_factory=dict)
    outbox: dict[str, tuple[OutboxItem, bool]] = field(default_factory=dict)
    token_rows: dict[str, tuple[str, TokenInfo]] = field(default_factory=dict)
    links: set[str] = field(default_factory=set)
    messages: set[tuple[str, str]] = field(default_factory=set)
    endpoint_rows: dict[str, Endpoint] = field(default_factory=dict)
    delivery_rows: dict[str, Delivery] = field(default_factory=dict)
    attempts: list[tuple[str, int, int | None, str | None]] = field(default_factory=list)
    events: dict[str, TaskEvent] = field(default_factory=dict)
    clock: Any = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def _side(self, outbox: Sequence[OutboxItem], deliveries: Sequence[Delivery], now: datetime) -> None:
        for item in outbox:
            self.outbox.setdefault(item.event_id, (item, False))
        for d in deliveries:
            self.delivery_rows.setdefault(d.delivery_id, replace(d, next_attempt_at=now))

    async def insert_request(
        self, record: ApprovalRecord, outbox: Sequence[OutboxItem], deliveries: Sequence[Delivery]
    ) -> ApprovalRecord | None:
        """Store a new request; None when one exists for the same action and kind."""
        async with self._lock:
            if await self.get_by_action(record.action_id, record.kind):
                return None
            self.records[record.approval_id] = record
            self._side(outbox, deliveries, record.created_at)
        return record

    async def get(self, approval_id: str) -> ApprovalRecord | None:
        """One request."""
        return self.records.get(approval_id)

    async def get_by_action(self, action_id: str, kind: str = "approval") -> ApprovalRecord | None:
        """The request of an action."""
        return next((r for r in self.records.values() if r.action_id == action_id and r.kind == kind), None)

    async def search(
        self, *, tenant_id: str | None, status: str | None, tool: str | None = None, reason: str | None = None, limit: int = 200
    ) -> list[ApprovalRecord]:
        """Requests, newest first, filtered."""
        found = [
            r
            for r in self.records.values()
            if (tenant_id is None or r.tenant_id == tenant_id)
            and (status is None or r.status == status)
            and (tool is None or r.tool == tool)
            and (reason is None or any(x.code == reason for x in r.reasons))
        ]
        return sorted(found, key=lambda r: r.created_at, reverse=True)[:limit]

    async def save(self, old_version: int, record: ApprovalRecord, outbox: Sequence[OutboxItem], deliveries: Sequence[Delivery]) -> bool:
        """Conditional update."""
        async with self._lock:
            current = self.records.get(record.approval_id)
            if current is None or current.version != old_version or not current.is_pending:
                return False
            self.records[record.approval_id] = record
            self._side(outbox, deliveries, record.decided_at or record.created_at)
        return True

    async def overdue(self, now: datetime) -> list[ApprovalRecord]:
        """Pending requests past their expiry."""
        return [r for r in self.records.values() if r.is_pending and r.expires_at <= now]

    async def due_for_escalation(self, before: datetime) -> list[ApprovalRecord]:
        """Pending, not yet escalated requests created before `before`."""
        return [
            r for r in self.records.values() if r.is_pending and r.kind == "approval" and r.escalated_at is None and r.created_at <= before
        ]

    async def unpublished(self, older_than: datetime) -> list[OutboxItem]:
        """Outbox items not yet published."""
        return [item for item, done in self.outbox.values() if not done]

    async def mark_published(self, event_id: str) -> None:
        """Record that an outbox item is on the bus."""
        item, _ = self.outbox[event_id]
        self.outbox[event_id] = (item, True)

    def _now(self) -> datetime:
        from schemas import utcnow

        return self.clock() if self.clock is not None else utcnow()

    def _live(self, info: TokenInfo) -> bool:
        return info.revoked_at is None and (info.expires_at is None or info.expires_at > self._now())

    async def add_token(
        self,
        token_sha256: str,
        approver: str,
        tenant_id: str,
        groups: Sequence[str],
        *,
        expires_at: datetime | None = None,
        operator: bool = False,
    ) -> TokenInfo:
        """Store a token's hash."""
        if operator != (tenant_id == "*"):
            raise ValueError("an operator token is tenant '*', and only an operator token is")
        info = TokenInfo(
            "tok_" + secrets.token_hex(6), approver, tenant_id, tuple(groups), self._now(), expires_at=expires_at, operator=operator
        )
        self.token_rows[info.token_id] = (token_sha256, info)
        return info

    async def token(self, token_sha256: str) -> TokenInfo | None:
        """The live token with this hash."""
        return next((info for h, info in self.token_rows.values() if h == token_sha256 and self._live(info)), None)

    async def rotate_token(self, token_id: str, new_sha256: str, expires_at: datetime) -> TokenInfo | None:
        """Revoke a live token and store its successor."""
        if token_id not in self.token_rows or not self._live(self.token_rows[token_id][1]):
            return None
        h, old = self.token_rows[token_id]
        self.token_rows[token_id] = (h, replace(old, revoked_at=self._now()))
        return await self.add_token(new_sha256, old.approver, old.tenant_id, old.groups, expires_at=expires_at, operator=old.operator)

    async def is_registered(self, approver: str, tenant_id: str) -> bool:
        """Whether `approver` holds a live token of exactly this tenant."""
        return any(i.approver == approver and i.tenant_id == tenant_id and self._live(i) for _, i in self.token_rows.values())

    async def tokens(self) -> list[TokenInfo]:
        """Every token."""
        return [info for _, info in self.token_rows.values()]

    async def revoke_token(self, token_id: str) -> bool:
        """Revoke a token."""
        if token_id not in self.token_rows or self.token_rows[token_id][1].revoked_at is not None:
            return False
        h, info = self.token_rows[token_id]
        self.token_rows[token_id] = (h, replace(info, revoked_at=self._now()))
        return True

    async def groups_of(self, approver: str, tenant_id: str) -> set[str]:
        """Union of the groups of an approver's live tokens in a tenant."""
        return {
            g
            for _, info in self.token_rows.values()
            if info.approver == approver and info.tenant_id in (tenant_id, "*") and self._live(info)
            for g in info.groups
        }

    async def spend_link(self, link_id: str, approval_id: str, approver: str) -> bool:
        """Record a link as used."""
        if link_id in self.links:
            return False
        self.links.add(link_id)
        return True

    async def remember_message(self, endpoint_id: str, message_id: str) -> bool:
        """Record an inbound message id."""
        if (endpoint_id, message_id) in self.messages:
            return False
        self.messages.add((endpoint_id, message_id))
        return True

    async def upsert_endpoint(self, endpoint: Endpoint, *, within_tenant: bool = False) -> bool:
        """Create or replace an endpoint (not another tenant's, with `within_tenant`)."""
        current = self.endpoint_rows.get(endpoint.endpoint_id)
        if within_tenant and current is not None and current.tenant_id != endpoint.tenant_id:
            return False
        self.endpoint_rows[endpoint.endpoint_id] = endpoint
        return True

    async def endpoint(self, endpoint_id: str) -> Endpoint | None:
        """One endpoint."""
        return self.endpoint_rows.get(endpoint_id)

    async def endpoints(self, tenant_id: str | None = None) -> list[Endpoint]:
        """Enabled endpoints for a tenant, or all."""
        return [e for e in self.endpoint_rows.values() if tenant_id is None or (e.enabled and e.tenant_id in (tenant_id, "*"))]

    async def endpoints_of(self, tenant_id: str) -> list[Endpoint]:
        """The endpoints that belong to a tenant."""
        return sorted((e for e in self.endpoint_rows.values() if e.tenant_id == tenant_id), key=lambda e: e.endpoint_id)

    async def claim_due_deliveries(self, now: datetime, lease: timedelta, limit: int = 20) -> list[tuple[Delivery, Endpoint]]:
        """Pending deliveries due now, leased."""
        due = [
            d for d in self.delivery_rows.values() if d.status == "pending" and d.next_attempt_at is not None and d.next_attempt_at <= now
        ][:limit]
        for d in due:
            self.delivery_rows[d.delivery_id] = replace(d, next_attempt_at=now + lease)
        return [(d, self.endpoint_rows[d.endpoint_id]) for d in due if d.endpoint_id in self.endpoint_rows]

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
        """Log one attempt and move the delivery on."""
        d = self.delivery_rows[delivery_id]
        self.attempts.append((delivery_id, attempt, status_code, error))
        self.delivery_rows[delivery_id] = replace(
            d,
            attempts=attempt,
            status=outcome,
            last_status_code=status_code,
            last_error=error,
            next_attempt_at=next_at or d.next_attempt_at,
        )

    async def deliveries(self, approval_id: str | None = None, limit: int = 200, *, tenant_id: str | None = None) -> list[Delivery]:
        """The delivery log."""
        owned = {e.endpoint_id for e in self.endpoint_rows.values() if e.tenant_id == tenant_id}
        return [
            d
            for d in self.delivery_rows.values()
            if (approval_id is None or d.approval_id == approval_id) and (tenant_id is None or d.endpoint_id in owned)
        ][:limit]

    async def record_task_event(self, event: TaskEvent) -> None:
        """Keep a decision or result."""
        self.events.setdefault(event.event_id, event)

    async def task_events(self, tenant_id: str, task_id: str) -> list[TaskEvent]:
        """What the service saw of a task."""
        return sorted((e for e in self.events.values() if e.tenant_id == tenant_id and e.task_id == task_id), key=lambda e: e.at)

    async def action_event(self, action_id: str, type_: str) -> TaskEvent | None:
        """The latest event of a type for an action."""
        found = [e for e in self.events.values() if e.action_id == action_id and e.type == type_]
        return max(found, key=lambda e: e.at) if found else None
