"""Where webhook endpoints are kept, one tenant each, with the ids of the messages each sent in (callbacks).

An endpoint is keyed by (tenant_id, endpoint_id): each tenant names its endpoints in its own space,
so no tenant can take, replace or probe another's ids. Its secret is stored sealed and its row signed
(`services.approval._endpoint_rows`): a row the schema's own login wrote or changed is no endpoint.
A Protocol, the asyncpg part and the in-memory twin's part (`_webhook_store` composes them with the other parts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from services.approval._endpoint_rows import SealedSecret
from services.approval._webhook_tables import VERDICT_COLUMNS, InMemoryWebhookTables, PgWebhookTables, sealed_of, unread_rows
from services.approval._webhook_values import Endpoint

__all__ = ["EndpointStore", "InMemoryEndpointStore", "PgEndpointStore"]


class EndpointStore(Protocol):
    """Webhook endpoints and inbound message ids."""

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

    async def change_endpoint(self, tenant_id: str, endpoint_id: str, change: Callable[[Endpoint], Endpoint]) -> Endpoint | None:
        """The endpoint as `change` makes it from the one stored now, written in one transaction (a secret rotated).

        None when there is no such endpoint in force (missing, disabled or refused).
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

    async def refused_endpoints(self) -> list[Endpoint]:
        """Every tenant's enabled endpoint whose row is refused, with `unproven` (not told: the owed-messages gauge's)."""
        ...

    async def remove_endpoint(self, tenant_id: str, endpoint_id: str, reason: str) -> Endpoint | None:
        """Disable an endpoint and take its approvers off it, and fail its pending deliveries with `reason`, at once.

        The row stays (disabled), for the delivery log and the inbound message ids that name it. None when it does not exist.
        """
        ...

    async def pin_unpinned(self) -> list[Endpoint]:
        """Name current (on `directory`) every proven endpoint row that no record names yet; those pinned."""
        ...

    async def overlaps_ended(self, now: datetime) -> list[Endpoint]:
        """The enabled API endpoints whose rotation's overlap ended by `now` and whose row still keeps the former secret.

        Read by the sweep at every round: nothing is read, verified or opened of an endpoint with no overlap due.
        """
        ...


def overlap_end(endpoint: Endpoint) -> datetime | None:
    """When the sweep rewrites `endpoint`'s row with its secret alone (`overlap_ends_at`): its overlap's end, if it keeps one.

    None for an endpoint of the operator's file (the file says what it holds) and a disabled one (it sends nothing).
    """
    if endpoint.source == "file" or not endpoint.enabled or endpoint.former_secret is None:
        return None
    return endpoint.former_until


def _overlap_due(endpoint: Endpoint, now: datetime) -> bool:
    """Whether the sweep writes `endpoint`'s row with its secret alone now."""
    end = overlap_end(endpoint)
    return endpoint.unproven is None and end is not None and end <= now


def _enrolled(found: Endpoint, approver: str, enrolled: bool) -> Endpoint:
    """`found` with `approver` enrolled, or taken off it: off its former approvers too (a rotation's former secret acts for them)."""
    others = tuple(a for a in found.approvers if a != approver)
    if enrolled:
        return replace(found, approvers=(*others, approver))
    return replace(found, approvers=others, former_approvers=tuple(a for a in found.former_approvers if a != approver))


class PgEndpointStore(PgWebhookTables, EndpointStore):
    """The PostgreSQL part: endpoint rows sealed and signed as they are written, verified as they are read."""

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
        sealed = self.endpoint_rows.sealed_endpoint(endpoint)
        async with self.pool.acquire() as conn, conn.transaction():
            before = await conn.fetchrow(
                f"SELECT * FROM {self.s}.webhook_endpoints WHERE tenant_id = $1 AND endpoint_id = $2 FOR UPDATE",
                endpoint.tenant_id,
                endpoint.endpoint_id,
            )
            was = self._endpoint(before) if before is not None else None
            owed = was is not None and was.enabled and endpoint.enabled and was.unproven is not None
            # Its age is kept for the secret it had; also over a refused row, whose secret cannot be compared (registered
            # again with the secret its chat tool has, the usual mend): never is an old secret dated new (`credentials`).
            same_secret = was is not None and (was.unproven is not None or was.secret == endpoint.secret)
            await self.endpoint_rows.pin(endpoint, sealed)  # named current before it is written: never an older row trusted
            await conn.execute(
                f"INSERT INTO {self.s}.webhook_endpoints (endpoint_id, url, secret, tenant_id, approvers, enabled, source, "
                "secret_key_id, secret_sealed, key_id, signature, overlap_ends_at, secret_set_at) VALUES ($1, $2, NULL, $3, $4, $5, "
                "$6, $7, $8, $9, $10, $12, now()) ON CONFLICT (tenant_id, endpoint_id) DO UPDATE SET url = EXCLUDED.url, secret = NULL, "
                "approvers = EXCLUDED.approvers, enabled = EXCLUDED.enabled, source = EXCLUDED.source, "
                "secret_key_id = EXCLUDED.secret_key_id, secret_sealed = EXCLUDED.secret_sealed, key_id = EXCLUDED.key_id, "
                "signature = EXCLUDED.signature, overlap_ends_at = EXCLUDED.overlap_ends_at, "
                f"secret_set_at = CASE WHEN $13 THEN {self.s}.webhook_endpoints.secret_set_at ELSE now() END, "
                f"owed_due = EXCLUDED.enabled AND ({self.s}.webhook_endpoints.owed_due OR $11)",
                endpoint.endpoint_id,
                endpoint.url,
                endpoint.tenant_id,
                list(endpoint.approvers),
                endpoint.enabled,
                endpoint.source,
                *self._row_values(endpoint, sealed),
                owed,
                overlap_end(endpoint),
                same_secret,
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
            sealed = sealed_of(row) if row else None
            if found is None or sealed is None or (found.url, found.secret) != (url, secret):
                return None
            changed = _enrolled(found, approver, enrolled)
            if changed.former_approvers != found.former_approvers:  # left during a rotation: the former secret no longer acts for them
                sealed = self.endpoint_rows.sealed_endpoint(changed)
            await self._write_changed(conn, changed, sealed)
        return changed

    async def _write_changed(self, conn: Any, changed: Endpoint, sealed: SealedSecret, *, new_secret: bool = False) -> None:
        """Write a locked row's approvers and sealed secret as `changed` has them, signed, once named current on `directory`.

        `new_secret`: its secret is another (a rotation): `secret_set_at` is now (what `tidegate credentials` dates it by).
        """
        await self.endpoint_rows.pin(changed, sealed)
        await conn.execute(
            f"UPDATE {self.s}.webhook_endpoints SET approvers = $3, secret_key_id = $4, secret_sealed = $5, key_id = $6, "
            "signature = $7, overlap_ends_at = $8, secret_set_at = CASE WHEN $9 THEN now() ELSE secret_set_at END "
            "WHERE tenant_id = $1 AND endpoint_id = $2",
            changed.tenant_id,
            changed.endpoint_id,
            list(changed.approvers),
            *self._row_values(changed, sealed),
            overlap_end(changed),
            new_secret,
        )

    async def change_endpoint(self, tenant_id: str, endpoint_id: str, change: Callable[[Endpoint], Endpoint]) -> Endpoint | None:
        """The endpoint in force changed by `change` (its URL and id kept), sealed, signed and pinned, the row locked meanwhile."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"SELECT * FROM {self.s}.webhook_endpoints WHERE tenant_id = $1 AND endpoint_id = $2 FOR UPDATE", tenant_id, endpoint_id
            )
            found = next(iter(self._proven([row])), None) if row else None
            if found is None or not found.enabled:
                return None
            changed = replace(change(found), tenant_id=found.tenant_id, endpoint_id=found.endpoint_id, url=found.url)
            sealed = self.endpoint_rows.sealed_endpoint(changed)
            await self._write_changed(conn, changed, sealed, new_secret=changed.secret != found.secret)
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

    async def refused_endpoints(self) -> list[Endpoint]:
        """Every tenant's enabled endpoint whose row is refused, with `unproven` (not told), read every second for the gauge.

        The enabled rows only (a removed endpoint's row is kept, disabled, forever), only the columns a verdict is drawn
        from, and a row found proven at the last round, unchanged, is not verified nor opened again
        (`EndpointRows.refused_among`): a row the database login rewrote is read again, and refused.
        """
        rows = await self.pool.fetch(
            f"SELECT {VERDICT_COLUMNS} FROM {self.s}.webhook_endpoints WHERE enabled ORDER BY tenant_id, endpoint_id"
        )
        return self.endpoint_rows.refused_among(unread_rows(rows))

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
            found, sealed = self._endpoint(row), sealed_of(row)
            removed = replace(found, enabled=False, approvers=())
            proof = self._row_values(removed, sealed)[2:] if found.unproven is None and sealed is not None else (None, None)
            await self.endpoint_rows.pin(removed, sealed if proof[0] is not None else None)  # refused: no signed row is current
            await conn.execute(
                f"UPDATE {self.s}.webhook_endpoints SET enabled = false, approvers = '{{}}', key_id = $3, signature = $4, "
                "owed_due = false, overlap_ends_at = NULL "
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

    async def pin_unpinned(self) -> list[Endpoint]:
        """Name current on `directory` every proven endpoint row no record names yet (an upgrade's first start); those pinned.

        Each row is locked while it is pinned, as a change locks it before publishing its own record: the row named is
        the newest written. Nothing when this process publishes no records.
        """
        pins = self.endpoint_rows.pins
        if pins is None or not pins.publishes:
            return []
        rows = await self.pool.fetch(f"SELECT * FROM {self.s}.webhook_endpoints ORDER BY tenant_id, endpoint_id")
        unpinned = [r for r in rows if pins.pinned(r["tenant_id"], r["endpoint_id"]) is None]
        pinned = []
        for key in (r for r in unpinned if self._endpoint(r, check_pin=False).unproven is None):  # only proven rows are pinned
            async with self.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    f"SELECT * FROM {self.s}.webhook_endpoints WHERE tenant_id = $1 AND endpoint_id = $2 FOR UPDATE",
                    key["tenant_id"],
                    key["endpoint_id"],
                )
                found, sealed = (self._endpoint(row, check_pin=False), sealed_of(row)) if row is not None else (None, None)
                if found is None or found.unproven is not None or sealed is None:
                    continue  # refused already (told at each read): registering it again pins it
                await self.endpoint_rows.pin(found, sealed)
                pinned.append(found)
        return pinned

    async def overlaps_ended(self, now: datetime) -> list[Endpoint]:
        """The rows whose `overlap_ends_at` has passed (by its partial index: none read while no overlap is due), verified.

        The column is not covered by the row's signature: it says which rows to read, never what they hold. A row whose
        sealed secret says otherwise (its column from before migration 016, `-infinity`; or written by the database's
        login) has the column set to what it holds (None when no overlap is kept, or the row is refused: registering it
        again writes it), unless it changed meanwhile.
        """
        rows = await self.pool.fetch(
            f"SELECT * FROM {self.s}.webhook_endpoints WHERE overlap_ends_at <= $1 ORDER BY tenant_id, endpoint_id", now
        )
        due = []
        for row in rows:
            found = self._endpoint(row)
            if _overlap_due(found, now):
                due.append(found)
                continue
            await self.pool.execute(
                f"UPDATE {self.s}.webhook_endpoints SET overlap_ends_at = $3 "
                "WHERE tenant_id = $1 AND endpoint_id = $2 AND overlap_ends_at IS NOT DISTINCT FROM $4",
                found.tenant_id,
                found.endpoint_id,
                overlap_end(found) if found.unproven is None else None,
                row["overlap_ends_at"],
            )
        return due


class InMemoryEndpointStore(InMemoryWebhookTables, EndpointStore):
    """The in-memory twin's part."""

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
        changed = self.endpoint_rows[tenant_id, endpoint_id] = _enrolled(found, approver, enrolled)
        return changed

    async def change_endpoint(self, tenant_id: str, endpoint_id: str, change: Callable[[Endpoint], Endpoint]) -> Endpoint | None:
        """The endpoint in force changed by `change` (its URL and id kept)."""
        found = self.endpoint_rows.get((tenant_id, endpoint_id))
        if found is None or not found.enabled:
            return None
        changed = replace(change(found), tenant_id=found.tenant_id, endpoint_id=found.endpoint_id, url=found.url)
        self.endpoint_rows[tenant_id, endpoint_id] = changed
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

    async def refused_endpoints(self) -> list[Endpoint]:
        """Every tenant's enabled endpoint whose row is refused."""
        refused = (e for e in self.endpoint_rows.values() if e.enabled and e.unproven is not None)
        return sorted(refused, key=lambda e: (e.tenant_id, e.endpoint_id))

    async def pin_unpinned(self) -> list[Endpoint]:
        """The twin publishes no records."""
        return []

    async def overlaps_ended(self, now: datetime) -> list[Endpoint]:
        """The enabled API endpoints whose overlap ended by `now` and that still keep the former secret."""
        return sorted((e for e in self.endpoint_rows.values() if _overlap_due(e, now)), key=lambda e: (e.tenant_id, e.endpoint_id))

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
