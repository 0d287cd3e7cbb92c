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
from tidegate.commands.credentials import in_database


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
