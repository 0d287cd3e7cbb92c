"""`tidegate credentials` on a deployment with approver tokens and webhook endpoints (upgrade21 F7).

The platform engineer reads one rotation table after an upgrade: every live approver token, as old as its creation and
with its expiry, and the webhook endpoints whose secrets it cannot date, with where to rotate them. Before, neither was
listed: the table had to be pieced from `approvals token list` and the endpoints API. Nothing secret is read: a token's
hash and an endpoint's sealed secret stay where they are.
"""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from servicekit import KitSettings
from tidegate.commands.credentials import _read_database, in_database


async def _rows(infra: Any, token_id: str) -> None:
    conn = await asyncpg.connect(infra.admin_database_url)
    try:
        now = datetime.now(UTC)
        await conn.execute(
            "INSERT INTO approval.approver_tokens (token_id, token_sha256, approver, tenant_id, groups, created_at, expires_at) "
            "VALUES ($1, $2, 'carol@acme.example', 'acme', '{finance}', $3, $4), ($5, $6, 'dave@acme.example', 'acme', '{}', $3, $3)",
            token_id,
            uuid.uuid4().hex,
            now - timedelta(days=100),
            now + timedelta(days=2),
            token_id + "-expired",
            uuid.uuid4().hex,
        )
    finally:
        await conn.close()


@pytest.fixture
def token_id(infra: Any) -> Any:
    import asyncio

    made = f"tok_{uuid.uuid4().hex[:10]}"
    asyncio.run(_rows(infra, made))
    yield made
    subprocess.run(
        ["psql", infra.admin_database_url, "-qc", f"DELETE FROM approval.approver_tokens WHERE token_id LIKE '{made}%'"], check=False
    )


def test_a_live_approver_token_is_listed_with_its_age_expiry_and_rotation_and_an_expired_one_is_not(infra: Any, token_id: str) -> None:
    found = in_database(KitSettings(database_url=infra.database_url))
    assert found.unread == ""
    mine = [c for c in found.tokens if c.name.startswith(token_id)]
    assert [c.name for c in mine] == [token_id]  # the expired one is no credential any more
    (token,) = mine
    assert 99.9 < (datetime.now(UTC).timestamp() - token.set_at) / 86_400 < 100.1
    assert token.rotate == f"tidegate approvals token rotate {token_id}"
    assert "carol@acme.example of acme" in token.note
    assert "expires " in token.note


async def test_a_webhook_secret_is_dated_at_registration_and_rotation_and_kept_otherwise(infra: Any, kit: KitSettings) -> None:
    """leftovers22 #2: each enabled endpoint's secret is listed with its age. Registering it again with the secret it has,
    or its overlap ending, keeps the age; a rotation starts it again; a secret set before migration 017 has none (due)."""
    from dataclasses import replace

    from approval_harness import service_seals

    from servicekit import create_pool
    from services.approval import webhooks
    from services.approval.repository import Endpoint, PgApprovalRepository

    tenant = f"acme-{uuid.uuid4().hex[:8]}"
    pool = await create_pool(infra.admin_database_url, max_size=2)
    try:
        repo = PgApprovalRepository(pool, "approval", seals=service_seals(kit))
        chat = Endpoint("chat", "https://chat.example/hook", webhooks.new_secret(), tenant, ())
        await repo.upsert_endpoint(chat)
        await repo.upsert_endpoint(Endpoint("pager", "https://pager.example/hook", webhooks.new_secret(), tenant, ()))
        long_ago = datetime.now(UTC) - timedelta(days=100)
        await pool.execute(  # as if registered 100 days ago; pager's as if set before migration 017
            "UPDATE approval.webhook_endpoints SET secret_set_at = CASE endpoint_id WHEN 'chat' THEN $2::timestamptz END "
            "WHERE tenant_id = $1",
            tenant,
            long_ago,
        )

        async def listed() -> dict[str, Any]:
            found = await _read_database(KitSettings(database_url=infra.database_url))  # `in_database`'s read, in this loop
            return {c.name.removeprefix(f"{tenant}/"): c for c in found.secrets if c.name.startswith(f"{tenant}/")}

        secrets = await listed()
        assert secrets["chat"].kind == "webhook secret"
        assert 99.9 < (secrets["chat"].age_days(datetime.now(UTC).timestamp()) or 0) < 100.1
        assert secrets["chat"].rotate == f"POST /api/v1/webhooks/endpoints/chat/rotate?tenant_id={tenant} (docs/approval.md)"
        assert secrets["pager"].set_at is None
        assert secrets["pager"].due(datetime.now(UTC).timestamp(), 90)

        await repo.upsert_endpoint(replace(chat, approvers=()))  # registered again with the secret it has: still 100 days
        assert 99.9 < ((await listed())["chat"].age_days(datetime.now(UTC).timestamp()) or 0) < 100.1
        await pool.execute("UPDATE approval.webhook_endpoints SET signature = 'x' WHERE tenant_id = $1 AND endpoint_id = 'chat'", tenant)
        await repo.upsert_endpoint(chat)  # a refused row mended: its secret cannot be compared, so its age is not started again
        assert 99.9 < ((await listed())["chat"].age_days(datetime.now(UTC).timestamp()) or 0) < 100.1
        new = webhooks.new_secret()
        await repo.change_endpoint(tenant, "chat", lambda e: replace(e, secret=new, former_secret=e.secret, former_until=datetime.now(UTC)))
        assert ((await listed())["chat"].age_days(datetime.now(UTC).timestamp()) or 99) < 0.01  # rotated: a new secret, dated now
        rotated_at = (await listed())["chat"].set_at
        await repo.change_endpoint(tenant, "chat", lambda e: replace(e, former_secret=None, former_until=None))  # overlap ended
        assert (await listed())["chat"].set_at == rotated_at
    finally:
        await pool.execute("DELETE FROM approval.webhook_endpoints WHERE tenant_id = $1", tenant)
        await pool.close()
