"""Where the approval service keeps its state: a Protocol, its asyncpg implementation, an in-memory twin.

This module holds the requests (with their outbox) and composes the task events seen
(`_task_event_store`), the credential part (`_token_store`) and the webhook part (`_webhook_store`)
into one repository.
Every change of a request is a conditional write (`... WHERE version = $old AND status = 'pending'`),
so two humans acting at the same moment cannot both settle it: one write wins, the other sees the
new state. Events to publish and webhook messages are written in the same transaction (outbox).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg

from servicekit import Recorded
from services.approval._approval_record import UnreadableRequest, read_record
from services.approval._endpoint_rows import EndpointRows
from services.approval._row_proofs import Seals, approval_seals
from services.approval._task_event_store import InMemoryTaskEventStore, PgTaskEventStore, TaskEvent, TaskEventStore
from services.approval._token_store import InMemoryTokenStore, PgTokenStore, TokenInfo, TokenStore
from services.approval._webhook_store import InMemoryWebhookStore, PgWebhookStore, WebhookStore
from services.approval._webhook_values import Attempt, Delivery, Endpoint
from services.approval.domain import ApprovalRecord

__all__ = [
    "UNADOPTED",
    "UNADOPTED_ORDER",
    "ApprovalRepository",
    "Attempt",
    "Delivery",
    "Endpoint",
    "InMemoryApprovalRepository",
    "OutboxItem",
    "PgApprovalRepository",
    "SweepKey",
    "SweepPage",
    "TaskEvent",
    "TokenInfo",
    "UnreadableRequest",
]


@dataclass(frozen=True)
class OutboxItem:
    """An event to publish on `topic`, encoded and signed: `payload` is stored, and published as it is."""

    event_id: str
    approval_id: str
    topic: str
    payload: str
    made: Recorded | None = field(default=None, compare=False)  # the record `payload` was made from, while it is at hand


class ApprovalRepository(TokenStore, WebhookStore, TaskEventStore, Protocol):
    """The approval service's storage: requests here, credentials and webhooks from their parts."""

    async def insert_request(
        self, record: ApprovalRecord, outbox: Sequence[OutboxItem], deliveries: Sequence[Delivery]
    ) -> ApprovalRecord | None:
        """Store a new request; None when one exists for the same action and kind (idempotent)."""
        ...

    async def lookup(self, approval_id: str) -> ApprovalRecord | UnreadableRequest | None:
        """One request, or why its row is refused (`read_record`: logged and counted), or None: no such row."""
        ...

    async def get(self, approval_id: str) -> ApprovalRecord | None:
        """One request; None when there is none, or its row is refused (`lookup` says which)."""
        found = await self.lookup(approval_id)
        return None if isinstance(found, UnreadableRequest) else found

    async def get_by_action(self, action_id: str, kind: str = "approval", *, tenant_id: str) -> ApprovalRecord | None:
        """The request of an action of `tenant_id` (another tenant's of the same action id is never theirs; a refused row: none)."""
        ...

    async def holder(self, action_id: str, kind: str = "approval") -> tuple[str, str] | None:
        """The id and tenant of the request an action has, any tenant's, its row read or refused (None: it has none)."""
        ...

    async def search(
        self,
        *,
        tenant_id: str | None,
        status: str | None,
        tool: str | None = None,
        reason: str | None = None,
        limit: int = 200,
        expiring_first: bool = False,
        after: tuple[datetime, str] | None = None,
        action_id: str | None = None,
    ) -> list[ApprovalRecord]:
        """Requests, filtered: newest first, or soonest to expire first (`expiring_first`); a row refused (`read_record`) is left out.

        `after` (the sort key, `created_at` or `expires_at`, and the `approval_id`) resumes past that request: the next page;
        `action_id`: only the requests of that action (its approval, and any follow-up).
        """
        ...

    async def save(self, old_version: int, record: ApprovalRecord, outbox: Sequence[OutboxItem], deliveries: Sequence[Delivery]) -> bool:
        """Write `record` only if the stored one is still pending at `old_version`; False if someone else won."""
        ...

    async def overdue(self, now: datetime, after: SweepKey | None = None) -> SweepPage:
        """One page of pending requests past their expiry, in (expiry, id) order after `after` (`SweepPage`)."""
        ...

    async def due_for_escalation(self, before: datetime, after: SweepKey | None = None) -> SweepPage:
        """One page of pending, not yet escalated requests created before `before`, in (creation, id) order after `after`."""
        ...

    async def unadopted(self, limit: int) -> tuple[int, list[str]]:
        """How many pending requests keep no signed event (opened by an older release), and the ids of the `limit` oldest."""
        ...

    async def unpublished(self, older_than: datetime) -> list[OutboxItem]:
        """Outbox items not yet published, created before `older_than`."""
        ...

    async def mark_published(self, event_id: str) -> None:
        """Forget an outbox item that is on the bus."""
        ...


# A pending request keeping no signed event (`record.decision`: opened by an older release), and their order: the start's
# line (`unadopted`) and `tidegate approvals adopt` select the same rows, oldest first.
UNADOPTED = "status = 'pending' AND record->>'decision' IS NULL"
UNADOPTED_ORDER = "created_at, approval_id"
_ROW = "approval_id, tenant_id, record"  # what a request is read from: its record, named by its columns if it is refused
# A sweep reads its due requests a page at a time, each page after the last one's key (keyset): a page of rows it cannot act
# on (refused, or written by the login to look due) no longer hides the rest, as one `LIMIT 500` did (attacker7).
SWEEP_PAGE = 500
SweepKey = tuple[datetime, str]  # (the time a sweep orders by, approval_id) of the last row of a page
SweepPage = tuple[list[ApprovalRecord], SweepKey | None]  # its requests (refused rows left out), and the next page's start (None: none)
_FIRST: SweepKey = (datetime.min.replace(tzinfo=UTC), "")


def _record(row: asyncpg.Record) -> ApprovalRecord | UnreadableRequest:
    """The request a row keeps, or why it is refused (logged and counted by `read_record`)."""
    try:
        return read_record(row["record"], row["approval_id"], row["tenant_id"])
    except UnreadableRequest as refused:
        return refused


def _readable(rows: Sequence[asyncpg.Record]) -> list[ApprovalRecord]:
    """The requests of `rows`, each refused row left out: one row no release wrote stops no listing, sweep or gauge."""
    return [r for r in map(_record, rows) if isinstance(r, ApprovalRecord)]


def _page(rows: Sequence[asyncpg.Record]) -> SweepPage:
    """A sweep's page of `rows` (read with the key they are ordered by, `at`): its readable requests, and where the next starts."""
    last = (rows[-1]["at"], rows[-1]["approval_id"]) if len(rows) == SWEEP_PAGE else None
    return _readable(rows), last


class PgApprovalRepository(PgTokenStore, PgWebhookStore, PgTaskEventStore, ApprovalRepository):
    """PostgreSQL storage in the `approval` schema (tables qualified, so any search_path works)."""

    def __init__(self, pool: asyncpg.Pool, schema: str = "approval", *, seals: Seals | None = None) -> None:
        """`seals`: how its rows that grant are signed and verified (default: it signs none and trusts none)."""
        self.pool = pool
        self.s = f'"{schema}"'
        self.seals = seals or approval_seals(None)
        self.token_seal = self.seals.tokens
        self.endpoint_rows = EndpointRows(self.seals.endpoints, self.seals.vault, self.seals.pins)
        self.token_pins = self.seals.pins

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
                f"INSERT INTO {self.s}.webhook_deliveries (delivery_id, endpoint_id, tenant_id, approval_id, event_type, body, status, "
                "next_attempt_at, body_key_id, body_signature) "
                "VALUES ($1, $2, $3, $4, $5, $6, 'pending', now(), $7, $8) ON CONFLICT DO NOTHING",
                d.delivery_id,
                d.endpoint_id,
                d.tenant_id,
                d.approval_id,
                d.event_type,
                d.body,
                d.key_id,
                d.signature,
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

    async def lookup(self, approval_id: str) -> ApprovalRecord | UnreadableRequest | None:
        """One request, or why its row is refused."""
        row = await self.pool.fetchrow(f"SELECT {_ROW} FROM {self.s}.approvals WHERE approval_id = $1", approval_id)
        return _record(row) if row else None

    async def get_by_action(self, action_id: str, kind: str = "approval", *, tenant_id: str) -> ApprovalRecord | None:
        """The request of an action of `tenant_id`."""
        row = await self.pool.fetchrow(
            f"SELECT {_ROW} FROM {self.s}.approvals WHERE action_id = $1 AND kind = $2 AND tenant_id = $3", action_id, kind, tenant_id
        )
        found = _record(row) if row else None
        return found if isinstance(found, ApprovalRecord) else None

    async def holder(self, action_id: str, kind: str = "approval") -> tuple[str, str] | None:
        """The id and tenant of the request an action has, from its columns (its record is not read: it may be refused)."""
        query = f"SELECT approval_id, tenant_id FROM {self.s}.approvals WHERE action_id = $1 AND kind = $2"
        row = await self.pool.fetchrow(query, action_id, kind)
        return (row["approval_id"], row["tenant_id"]) if row else None

    async def search(
        self,
        *,
        tenant_id: str | None,
        status: str | None,
        tool: str | None = None,
        reason: str | None = None,
        limit: int = 200,
        expiring_first: bool = False,
        after: tuple[datetime, str] | None = None,
        action_id: str | None = None,
    ) -> list[ApprovalRecord]:
        """Requests, filtered (reason: any of the request's reason codes), in the page's order from `after` on.

        A refused row is left out and the rows past it read, until `limit` requests or none left: a page of junk rows (the
        login's, with a time that sorts them first) came back short or empty, so the listing gave no next page and hid
        every request behind them.
        """
        key = "expires_at" if expiring_first else "created_at"
        found: list[ApprovalRecord] = []
        while True:
            rows = await self._page(tenant_id, status, tool, reason, limit, expiring_first, after, action_id)
            found += _readable(rows)
            if len(rows) < limit or len(found) >= limit:
                return found[:limit]
            after = (rows[-1][key], rows[-1]["approval_id"])

    async def _page(
        self,
        tenant_id: str | None,
        status: str | None,
        tool: str | None,
        reason: str | None,
        limit: int,
        expiring_first: bool,
        after: tuple[datetime, str] | None,
        action_id: str | None,
    ) -> list[asyncpg.Record]:
        """The rows of one `search` page, refused ones among them."""
        key, past, order = ("expires_at", ">", "ASC") if expiring_first else ("created_at", "<", "DESC")
        return await self.pool.fetch(
            f"SELECT {_ROW}, {key} FROM {self.s}.approvals WHERE ($1::text IS NULL OR tenant_id = $1) "
            "AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR tool = $3) "
            "AND ($4::text IS NULL OR record->'reasons' @> jsonb_build_array(jsonb_build_object('code', $4::text))) "
            f"AND ($6::timestamptz IS NULL OR ({key}, approval_id) {past} ($6, $7::text)) "
            "AND ($8::text IS NULL OR action_id = $8) "
            f"ORDER BY {key} {order}, approval_id {order} LIMIT $5",
            tenant_id,
            status,
            tool,
            reason,
            limit,
            *(after or (None, None)),
            action_id,
        )

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

    async def overdue(self, now: datetime, after: SweepKey | None = None) -> SweepPage:
        """One page of pending requests past their expiry, in (expiry, id) order after `after` (`SweepPage`)."""
        rows = await self.pool.fetch(
            f"SELECT {_ROW}, expires_at AS at FROM {self.s}.approvals WHERE status = 'pending' AND expires_at <= $1 "
            "AND (expires_at, approval_id) > ($2, $3) ORDER BY expires_at, approval_id LIMIT $4",
            now,
            *(after or _FIRST),
            SWEEP_PAGE,
        )
        return _page(rows)

    async def due_for_escalation(self, before: datetime, after: SweepKey | None = None) -> SweepPage:
        """One page of pending, not yet escalated requests created before `before`, in (creation, id) order after `after`."""
        rows = await self.pool.fetch(
            f"SELECT {_ROW}, created_at AS at FROM {self.s}.approvals WHERE status = 'pending' AND escalated_at IS NULL "
            "AND kind = 'approval' AND created_at <= $1 AND (created_at, approval_id) > ($2, $3) "
            "ORDER BY created_at, approval_id LIMIT $4",
            before,
            *(after or _FIRST),
            SWEEP_PAGE,
        )
        return _page(rows)

    async def unadopted(self, limit: int) -> tuple[int, list[str]]:
        """How many pending requests keep no signed event (opened by an older release), and the ids of the `limit` oldest."""
        rows = await self.pool.fetch(
            f"SELECT approval_id, count(*) OVER () AS n FROM {self.s}.approvals WHERE {UNADOPTED} ORDER BY {UNADOPTED_ORDER} LIMIT $1",
            limit,
        )
        return (rows[0]["n"] if rows else 0), [r["approval_id"] for r in rows]

    async def unpublished(self, older_than: datetime) -> list[OutboxItem]:
        """Outbox items not yet published, created before `older_than`."""
        rows = await self.pool.fetch(
            f"SELECT event_id, approval_id, topic, payload FROM {self.s}.outbox WHERE published_at IS NULL AND created_at "
            "<= $1 ORDER BY created_at LIMIT 500",
            older_than,
        )
        return [OutboxItem(r["event_id"], r["approval_id"], r["topic"], r["payload"]) for r in rows]

    async def mark_published(self, event_id: str) -> None:
        """Forget an outbox item that is on the bus (the audit log keeps the event; nothing reads a published item again)."""
        await self.pool.execute(f"DELETE FROM {self.s}.outbox WHERE event_id = $1", event_id)


@dataclass
class InMemoryApprovalRepository(InMemoryTokenStore, InMemoryWebhookStore, InMemoryTaskEventStore, ApprovalRepository):
    """The in-memory twin, for unit tests; a lock stands in for PostgreSQL's row locks."""

    records: dict[str, ApprovalRecord] = field(default_factory=dict)
    outbox: dict[str, tuple[OutboxItem, bool]] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def _side(self, outbox: Sequence[OutboxItem], deliveries: Sequence[Delivery], now: datetime) -> None:
        for item in outbox:
            self.outbox.setdefault(item.event_id, (replace(item, made=None), False))  # kept as PostgreSQL keeps it: its stored text
        for d in deliveries:
            self.delivery_rows.setdefault(d.delivery_id, replace(d, next_attempt_at=now, created_at=now))

    async def insert_request(
        self, record: ApprovalRecord, outbox: Sequence[OutboxItem], deliveries: Sequence[Delivery]
    ) -> ApprovalRecord | None:
        """Store a new request; None when one exists for the same action and kind."""
        async with self._lock:
            if any(r.action_id == record.action_id and r.kind == record.kind for r in self.records.values()):
                return None
            self.records[record.approval_id] = record
            self._side(outbox, deliveries, record.created_at)
        return record

    async def lookup(self, approval_id: str) -> ApprovalRecord | UnreadableRequest | None:
        """One request (the twin keeps requests, never rows: none is refused)."""
        return self.records.get(approval_id)

    async def get_by_action(self, action_id: str, kind: str = "approval", *, tenant_id: str) -> ApprovalRecord | None:
        """The request of an action of `tenant_id`."""
        return next((r for r in self.records.values() if (r.action_id, r.kind, r.tenant_id) == (action_id, kind, tenant_id)), None)

    async def holder(self, action_id: str, kind: str = "approval") -> tuple[str, str] | None:
        """The id and tenant of the request an action has, any tenant's."""
        return next(((r.approval_id, r.tenant_id) for r in self.records.values() if (r.action_id, r.kind) == (action_id, kind)), None)

    async def search(
        self,
        *,
        tenant_id: str | None,
        status: str | None,
        tool: str | None = None,
        reason: str | None = None,
        limit: int = 200,
        expiring_first: bool = False,
        after: tuple[datetime, str] | None = None,
        action_id: str | None = None,
    ) -> list[ApprovalRecord]:
        """Requests, filtered, in the page's order from `after` on."""
        found = [
            r
            for r in self.records.values()
            if (tenant_id is None or r.tenant_id == tenant_id)
            and (status is None or r.status == status)
            and (tool is None or r.tool == tool)
            and (reason is None or any(x.code == reason for x in r.reasons))
            and (action_id is None or r.action_id == action_id)
        ]
        key = _expiring if expiring_first else _newest
        ordered = sorted(found, key=key, reverse=not expiring_first)
        return [r for r in ordered if after is None or (key(r) > after if expiring_first else key(r) < after)][:limit]

    async def save(self, old_version: int, record: ApprovalRecord, outbox: Sequence[OutboxItem], deliveries: Sequence[Delivery]) -> bool:
        """Conditional update."""
        async with self._lock:
            current = self.records.get(record.approval_id)
            if current is None or current.version != old_version or not current.is_pending:
                return False
            self.records[record.approval_id] = record
            self._side(outbox, deliveries, record.decided_at or record.created_at)
        return True

    async def overdue(self, now: datetime, after: SweepKey | None = None) -> SweepPage:
        """Pending requests past their expiry, all in one page."""
        return [r for r in self.records.values() if r.is_pending and r.expires_at <= now], None

    async def unadopted(self, limit: int) -> tuple[int, list[str]]:
        """How many pending requests keep no signed event (opened by an older release), and the ids of the `limit` oldest."""
        found = [r for r in self.records.values() if r.is_pending and r.decision is None]
        found.sort(key=lambda r: (r.created_at, r.approval_id))
        return len(found), [r.approval_id for r in found[:limit]]

    async def due_for_escalation(self, before: datetime, after: SweepKey | None = None) -> SweepPage:
        """Pending, not yet escalated requests created before `before`, all in one page."""
        due = [
            r for r in self.records.values() if r.is_pending and r.kind == "approval" and r.escalated_at is None and r.created_at <= before
        ]
        return due, None

    async def unpublished(self, older_than: datetime) -> list[OutboxItem]:
        """Outbox items not yet published."""
        return [item for item, done in self.outbox.values() if not done]

    async def mark_published(self, event_id: str) -> None:
        """Forget an outbox item that is on the bus, as PostgreSQL does."""
        self.outbox.pop(event_id, None)


def _newest(record: ApprovalRecord) -> tuple[datetime, str]:
    return record.created_at, record.approval_id


def _expiring(record: ApprovalRecord) -> tuple[datetime, str]:
    return record.expires_at, record.approval_id
