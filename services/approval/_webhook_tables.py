"""The tables the webhook parts share: PostgreSQL's rows read as values, the in-memory twin's rows in dicts.

`PgWebhookTables` reads `webhook_endpoints`, `webhook_deliveries` and `webhook_attempts` rows as values, every endpoint
row verified and its secret opened (`services.approval._endpoint_rows`); `InMemoryWebhookTables` holds the twin's rows.
Each part (`_webhook_endpoints`, `_webhook_queue`, `_webhook_log`, `_webhook_owed`) builds on one of them, so the parts
composed (`_webhook_store`) share one pool, one schema and one set of rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncpg

from services.approval._endpoint_rows import EndpointRows, SealedSecret
from services.approval._webhook_values import Attempt, Delivery, Endpoint

if TYPE_CHECKING:
    from services.approval.domain import ApprovalRecord

__all__ = ["VERDICT_COLUMNS", "InMemoryWebhookTables", "PgWebhookTables", "attempt_of", "delivery_of", "sealed_of", "unread_rows"]


def delivery_of(row: asyncpg.Record) -> Delivery:
    """A `webhook_deliveries` row as a delivery."""
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
        key_id=row.get("body_key_id"),  # none in a schema before migration 018 (a migration's own test reads it): unsigned
        signature=row.get("body_signature"),
    )


def attempt_of(row: asyncpg.Record) -> Attempt:
    """A `webhook_attempts` row as an attempt."""
    return Attempt(
        delivery_id=row["delivery_id"],
        attempt=row["attempt"],
        at=row["at"],
        status_code=row["status_code"],
        error=row["error"],
        duration_ms=row["duration_ms"],
    )


def sealed_of(row: asyncpg.Record) -> SealedSecret | None:
    """The row's sealed secret; None for a row from before secrets were sealed (migration 011)."""
    if row["secret_key_id"] is None or row["secret_sealed"] is None:
        return None
    return SealedSecret(row["secret_key_id"], bytes(row["secret_sealed"]))


# What an endpoint row's verdict is drawn from (`EndpointRows.read`): the columns its signature covers, and its proof.
VERDICT_COLUMNS = "tenant_id, endpoint_id, url, approvers, enabled, source, secret_key_id, secret_sealed, key_id, signature"


def _unread(row: asyncpg.Record) -> Endpoint:
    """A row as an endpoint before it is verified: an empty secret, nothing said of its proof."""
    return Endpoint(
        endpoint_id=row["endpoint_id"],
        url=row["url"],
        secret="",
        tenant_id=row["tenant_id"],
        approvers=tuple(row["approvers"]),
        enabled=row["enabled"],
        source=row["source"],
    )


def unread_rows(rows: Sequence[asyncpg.Record]) -> list[tuple[Endpoint, SealedSecret | None, str | None, str | None]]:
    """Rows (`VERDICT_COLUMNS` at least) as `EndpointRows.refused_among` takes them."""
    return [(_unread(r), sealed_of(r), r["key_id"], r["signature"]) for r in rows]


class PgWebhookTables:
    """The PostgreSQL parts' shared ground (tables `webhook_endpoints`, `webhook_deliveries`, `webhook_attempts`, `inbound_messages`).

    The repository sets `pool`, `s` and `endpoint_rows`. Every endpoint row it writes has its secret sealed and is signed;
    every row it reads is verified and its secret opened. A row that fails is no endpoint where one grants (a message to
    send, a callback, an enrolment): left out, logged and counted. Listings (`endpoints()` of all, `endpoints_of`) show
    it with `unproven` set, so that an admin sees what to register again.
    """

    pool: asyncpg.Pool
    s: str
    endpoint_rows: EndpointRows

    def _endpoint(self, row: asyncpg.Record, *, check_pin: bool = True) -> Endpoint:
        """A row as an endpoint: its secret opened, or `unproven` set (and an empty secret); `check_pin`: and it is current."""
        return self.endpoint_rows.read(_unread(row), sealed_of(row), row["key_id"], row["signature"], check_pin=check_pin)

    def _proven(self, rows: Sequence[asyncpg.Record]) -> list[Endpoint]:
        """The rows that are endpoints (the others told, and left out)."""
        return [e for e in map(self._endpoint, rows) if not self.endpoint_rows.refused(e)]

    def _row_values(self, endpoint: Endpoint, secret: SealedSecret) -> tuple[str, bytes, str, str]:
        """The sealed secret's and the proof's columns of `endpoint` as it is written now."""
        proof = self.endpoint_rows.sign(endpoint, secret)
        return secret.key_id, secret.ciphertext, proof.key_id, proof.signature


@dataclass
class InMemoryWebhookTables:
    """The in-memory twin's rows, shared by its parts."""

    messages: set[tuple[str, str, str]] = field(default_factory=set)
    endpoint_rows: dict[tuple[str, str], Endpoint] = field(default_factory=dict)
    owed_due: set[tuple[str, str]] = field(default_factory=set)
    records: dict[str, ApprovalRecord] = field(default_factory=dict)  # the requests (the repository's part keeps them)
    delivery_rows: dict[str, Delivery] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)

    def _enabled(self, d: Delivery) -> bool:
        endpoint = self.endpoint_rows.get((d.tenant_id, d.endpoint_id))
        return endpoint is not None and endpoint.enabled
