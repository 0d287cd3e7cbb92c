"""The approval service's own database login, in an attacker's hands, rolls authority back (security review of grants, F2, F3).

The attacker holds only `tidegate_approval`'s PostgreSQL login (no Kafka login, no signing key). It cannot forge a row,
but it copied the rows it could read, and puts them back once an admin or the operator changed them:

- a webhook endpoint's row from before its secret was replaced (the old one leaked): callbacks signed with the leaked
  secret approve again as the endpoint's approvers;
- an endpoint's enabled row, after an admin removed it;
- a token's `revoked_at` cleared, after an admin, the operator's CLI or the holder's rotation revoked it (no signature
  covers it): the revoked, leaked token approves again.

Before the fix each of these was trusted (its signature still held). Now every change is first named on `directory`
(`services.approval._pins`), and a row that is not the one named is refused `rolled_back`, by the running service and by
one started afterwards (which reads `directory` before it serves). The real service, Kafka, PostgreSQL and CLI.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from approval_harness import ApprovalHarness, StartApproval
from test_approval_login_endpoints import BOB, GROUPS, bearer, callback, chat_endpoint, pending
from test_connector_grant_forgery import operator, tidegate

from servicekit import KitSettings
from servicekit.dbroles import service_database_url
from servicekit.metrics import ROWS_REFUSED
from services.approval import webhooks
from services.approval.repository import Endpoint

pytestmark = pytest.mark.integration

WaitFor = Callable[..., Awaitable[Any]]
ENDPOINT_COLUMNS = "url, approvers, enabled, source, secret_key_id, secret_sealed, key_id, signature"
CHAT = "http://127.0.0.1:9/chat"


def rolled_back(table: str) -> float:
    """Rows of `table` the approval service refused as rolled back so far (`tidegate_rows_refused_total`)."""
    return ROWS_REFUSED.labels("approval", table, "rolled_back")._value.get()


@pytest.fixture
async def attacker(kit: KitSettings) -> AsyncIterator[asyncpg.Connection]:
    """The approval service's own login, exactly as the service builds its DSN: all the attacker holds."""
    conn = await asyncpg.connect(service_database_url(kit, "approval"))
    yield conn
    await conn.close()


async def copy_of(attacker: asyncpg.Connection, tenant: str) -> asyncpg.Record:
    row = await attacker.fetchrow(f"SELECT {ENDPOINT_COLUMNS} FROM approval.webhook_endpoints WHERE tenant_id = $1", tenant)
    assert row is not None
    return row


async def put_back(attacker: asyncpg.Connection, tenant: str, old: asyncpg.Record) -> None:
    """The copy written over the current row, byte for byte (what a restored backup does too)."""
    done = await attacker.execute(
        "UPDATE approval.webhook_endpoints SET url = $2, approvers = $3, enabled = $4, source = $5, secret_key_id = $6, "
        "secret_sealed = $7, key_id = $8, signature = $9 WHERE tenant_id = $1",
        tenant, *old.values(),
    )  # fmt: skip
    assert done == "UPDATE 1"


async def start(start_approval: StartApproval, tmp_path: Path, **settings: Any) -> ApprovalHarness:
    (groups := tmp_path / "groups.yaml").write_text(GROUPS)
    return await start_approval(groups_file=groups, **settings)


async def test_an_endpoint_row_from_before_its_leaked_secret_was_replaced_is_refused(
    start_approval: StartApproval,
    http: httpx.AsyncClient,
    attacker: asyncpg.Connection,
    wait_for: WaitFor,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    h = await start(start_approval, tmp_path)
    leaked, _ = await chat_endpoint(h, http, CHAT)
    before = await copy_of(attacker, h.tenant)  # the attacker's copy, while the leaked secret is the endpoint's

    # The leak is found: an admin registers the endpoint again with a new secret, bob enrols it again.
    fresh, _ = await chat_endpoint(h, http, CHAT)
    assert fresh != leaked
    record = await pending(h, wait_for)
    assert (await callback(h, http, record, leaked)).status_code == 401

    await put_back(attacker, h.tenant, before)
    refused = rolled_back("webhook_endpoints")
    answer = await callback(h, http, record, leaked)
    assert answer.status_code == 401, answer.text  # before the fix: 200, granted in bob's name with the leaked secret
    assert answer.json()["detail"]["code"] == "bad_signature"
    assert (await h.repo.get(record.approval_id)).status == "pending"  # type: ignore[union-attr]
    assert rolled_back("webhook_endpoints") > refused
    assert "rolled_back: it is not the row the newest tidegate.directory.endpoint record names" in caplog.text
    admin = await h.token("root@acme.example", ["admin"])
    listed = (await http.get(f"{h.url}/api/v1/webhooks/endpoints", headers=bearer(admin))).json()
    assert [e["refused"][:12] for e in listed] == ["rolled_back:"], listed  # what the admin sees: register it again

    # A copy of the service started now reads `directory` before it serves: the rolled-back row is refused there too.
    again = await start(start_approval, tmp_path)
    again.tenant = h.tenant
    answer = await callback(again, http, record, leaked)
    assert (answer.status_code, answer.json()["detail"]["code"]) == (401, "bad_signature"), answer.text
    assert (await h.repo.get(record.approval_id)).status == "pending"  # type: ignore[union-attr]


async def test_an_endpoint_an_admin_removed_cannot_be_put_back_enabled(
    start_approval: StartApproval, http: httpx.AsyncClient, attacker: asyncpg.Connection, wait_for: WaitFor, tmp_path: Path
) -> None:
    h = await start(start_approval, tmp_path)
    secret, _ = await chat_endpoint(h, http, CHAT)
    enabled = await copy_of(attacker, h.tenant)
    admin = await h.token("root@acme.example", ["admin"])
    removed = await http.delete(f"{h.url}/api/v1/webhooks/endpoints/chat", headers=bearer(admin))
    assert removed.status_code == 200, removed.text

    await put_back(attacker, h.tenant, enabled)
    record = await pending(h, wait_for)
    answer = await callback(h, http, record, secret)
    assert answer.status_code == 401, answer.text
    assert await h.repo.deliveries(record.approval_id) == []  # no message (nor one-time link) goes to it either


async def test_a_token_revoked_by_an_admin_stays_revoked_when_the_login_clears_revoked_at(
    start_approval: StartApproval, http: httpx.AsyncClient, attacker: asyncpg.Connection, tmp_path: Path
) -> None:
    h = await start(start_approval, tmp_path)
    admin = await h.token("root@acme.example", ["admin"])
    leaked = await h.token(BOB, ["finance"])
    me = f"{h.url}/api/v1/me"
    assert (await http.get(me, headers=bearer(leaked))).status_code == 200
    (bobs,) = [t for t in (await http.get(f"{h.url}/api/v1/tokens", headers=bearer(admin))).json() if t["approver"] == BOB]
    revoked = await http.post(f"{h.url}/api/v1/tokens/{bobs['token_id']}/revoke", headers=bearer(admin))
    assert revoked.status_code == 200, revoked.text
    assert (await http.get(me, headers=bearer(leaked))).status_code == 401

    await attacker.execute("UPDATE approval.approver_tokens SET revoked_at = NULL WHERE token_id = $1", bobs["token_id"])
    refused = rolled_back("approver_tokens")
    assert (await http.get(me, headers=bearer(leaked))).status_code == 401
    assert rolled_back("approver_tokens") > refused
    (shown,) = [t for t in (await http.get(f"{h.url}/api/v1/tokens", headers=bearer(admin))).json() if t["approver"] == BOB]
    assert (shown["revoked_at"], shown["live"], shown["refused"][:12]) == (None, False, "rolled_back:"), shown  # not "live"
    again = await start(start_approval, tmp_path)  # read from `directory` at start
    assert (await http.get(f"{again.url}/api/v1/me", headers=bearer(leaked))).status_code == 401


async def test_a_token_rotated_away_or_revoked_by_the_operators_cli_stays_revoked(
    start_approval: StartApproval, http: httpx.AsyncClient, attacker: asyncpg.Connection, tmp_path: Path
) -> None:
    h = await start(start_approval, tmp_path)
    me = f"{h.url}/api/v1/me"
    old = await h.token(BOB, ["finance"])
    rotated = await http.post(f"{h.url}/api/v1/tokens/rotate", headers=bearer(old))
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["token"]
    assert (await http.get(me, headers=bearer(old))).status_code == 401

    (live,) = [t for t in listed(h) if t["tenant_id"] == h.tenant and t["revoked_at"] is None]
    operator(h.kit, "approvals", "token", "revoke", live["token_id"])
    assert (await http.get(me, headers=bearer(new))).status_code == 401

    await attacker.execute("UPDATE approval.approver_tokens SET revoked_at = NULL WHERE tenant_id = $1", h.tenant)
    for token in (old, new):
        assert (await http.get(me, headers=bearer(token))).status_code == 401
    shown = [t for t in listed(h) if t["tenant_id"] == h.tenant]  # what the operator sees: both refused, and why
    assert [(t["revoked_at"], (t["refused"] or "")[:12]) for t in shown] == [(None, "rolled_back:")] * 2, shown


def listed(h: ApprovalHarness) -> list[dict[str, Any]]:
    """`tidegate approvals token list --json`, as the operator runs it."""
    done = tidegate(h.kit, "approvals", "token", "list", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_rows_from_before_the_upgrade_are_pinned_at_start(
    start_approval: StartApproval,
    http: httpx.AsyncClient,
    attacker: asyncpg.Connection,
    wait_for: WaitFor,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An older release wrote (and revoked) without records: trusted with a warning, then named at the next start."""
    caplog.set_level(logging.WARNING)
    h = await start(start_approval, tmp_path)
    older = h.repo  # the rows an older release wrote: signed, but named nowhere
    secret = webhooks.new_secret()
    await older.upsert_endpoint(Endpoint("chat", CHAT, secret, h.tenant, (BOB,)))
    leaked = await h.token(BOB, ["finance"])
    (bobs,) = [t for t in await older.tokens() if t.tenant_id == h.tenant]
    first = await copy_of(attacker, h.tenant)
    await older.upsert_endpoint(Endpoint("chat", CHAT, webhooks.new_secret(), h.tenant, (BOB,)))
    assert await older.revoke_token(bobs.token_id)
    record = await pending(h, wait_for)
    assert await h.repo.endpoint(h.tenant, "chat") is not None  # a store that checks no record
    assert (await callback(h, http, record, secret)).status_code == 401  # the running service: the newer row only
    trusted = f"webhook endpoint chat of tenant {h.tenant} is trusted though no tidegate.directory.endpoint record names its row"
    assert trusted in caplog.text

    upgraded = await start(start_approval, tmp_path)  # its first start names the rows as they are
    upgraded.tenant = h.tenant
    assert f"webhook endpoint chat of tenant {h.tenant} ({CHAT}) pinned as found" in caplog.text
    await put_back(attacker, h.tenant, first)
    await attacker.execute("UPDATE approval.approver_tokens SET revoked_at = NULL WHERE token_id = $1", bobs.token_id)
    assert (await callback(upgraded, http, record, secret)).status_code == 401
    assert (await http.get(f"{upgraded.url}/api/v1/me", headers=bearer(leaked))).status_code == 401


class FullDisk:
    """The service's pool, but PostgreSQL's disk is full: every UPDATE of a token's revoked_at fails (the failing system)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def fetchval(self, query: str, *args: Any) -> Any:
        self.refuse(query)
        return await self.pool.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> Any:
        self.refuse(query)
        return await self.pool.execute(query, *args)

    @staticmethod
    def refuse(query: str) -> None:
        if "SET revoked_at" in query:
            raise asyncpg.exceptions.DiskFullError("could not extend file: No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pool, name)


async def test_a_revocation_whose_row_the_database_failed_to_write_is_told_as_that_never_as_a_rollback(
    start_approval: StartApproval,
    http: httpx.AsyncClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    wait_for: WaitFor,
) -> None:
    """An admin revokes a leaked token while the database fails the row's write (its record is on `directory` already).

    Before, the admin got a 503 and then every read of the token raised the tampering alarm: `rolled_back` (metric and
    log: "find who wrote approval.approver_tokens"), for a row no one touched. Now the failure itself is logged (what
    failed), the token is refused as revoked, no rollback is counted, and the sweep writes the row once the disk has room.
    """
    h = await start(start_approval, tmp_path)
    admin = await h.token("root@acme.example", ["admin"])
    leaked = await h.token(BOB, ["finance"])
    tokens, me = f"{h.url}/api/v1/tokens", f"{h.url}/api/v1/me"
    (bobs,) = [t for t in (await http.get(tokens, headers=bearer(admin))).json() if t["approver"] == BOB]
    repo = h.proc.approval.repo
    assert isinstance(repo.pool, asyncpg.Pool)
    monkeypatch.setattr(repo, "pool", FullDisk(repo.pool))
    refused = rolled_back("approver_tokens")
    with caplog.at_level(logging.WARNING):
        failed = await http.post(f"{tokens}/{bobs['token_id']}/revoke", headers=bearer(admin))
    assert failed.status_code == 503, failed.text  # the admin is told it did not go through
    told = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and bobs["token_id"] in r.getMessage()]
    assert told, caplog.text  # the real failure, and what to do
    assert "No space left on device" in told[0]
    assert "the sweep writes it" in told[0]

    assert (await http.get(me, headers=bearer(leaked))).status_code == 401  # revoked at once all the same
    (shown,) = [t for t in (await http.get(tokens, headers=bearer(admin))).json() if t["approver"] == BOB]
    assert (shown["revoked_at"], shown["live"]) == (None, False), shown
    assert shown["refused"].startswith("revoked:"), shown
    assert "No space left on device" in shown["refused"]
    assert rolled_back("approver_tokens") == refused  # no false alarm
    assert "rolled_back" not in caplog.text

    monkeypatch.undo()  # the disk freed: the sweep writes the row

    async def written() -> dict[str, Any] | None:
        (row,) = [t for t in (await http.get(tokens, headers=bearer(admin))).json() if t["approver"] == BOB]
        return row if row["revoked_at"] is not None else None

    shown = await wait_for(written, timeout=15)
    assert shown["refused"] is None, shown
    assert rolled_back("approver_tokens") == refused
