"""Upgrading a database whose webhook endpoint ids were global to ids of each tenant (migration 004)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

from servicekit import REPO_ROOT, create_pool
from servicekit.db import apply_migrations
from services.approval.repository import PgApprovalRepository

MIGRATIONS = REPO_ROOT / "services" / "approval" / "migrations"
PER_TENANT = "004_endpoints_per_tenant.sql"


async def test_existing_endpoints_deliveries_and_message_ids_keep_their_tenant_and_ids_become_per_tenant(
    infra: Any, tmp_path: Path
) -> None:
    schema = f"approval_upgrade_{uuid.uuid4().hex[:8]}"
    before = tmp_path / "migrations"
    before.mkdir()
    for path in sorted(MIGRATIONS.glob("*.sql")):
        if path.name < PER_TENANT:
            shutil.copy(path, before / path.name)
    pool = await create_pool(infra.database_url, max_size=2)
    try:
        await apply_migrations(pool, schema, before)
        s = f'"{schema}"'
        await pool.execute(
            f"INSERT INTO {s}.webhook_endpoints (endpoint_id, url, secret, tenant_id) VALUES ('chat', 'https://b/', 'x', 'acme')"
        )
        await pool.execute(
            f"INSERT INTO {s}.webhook_deliveries (delivery_id, endpoint_id, approval_id, event_type, body, status, next_attempt_at) "
            "VALUES ('msg_1', 'chat', 'ap-1', 'approval.requested', '{}', 'pending', now())"
        )
        await pool.execute(f"INSERT INTO {s}.inbound_messages (endpoint_id, message_id) VALUES ('chat', 'in_1'), ('gone', 'in_2')")

        shutil.copy(MIGRATIONS / PER_TENANT, before / PER_TENANT)
        assert await apply_migrations(pool, schema, before) == [PER_TENANT]

        repo = PgApprovalRepository(pool, schema)
        (delivery,) = await repo.deliveries(tenant_id="acme")
        assert (delivery.delivery_id, delivery.tenant_id, delivery.endpoint_id) == ("msg_1", "acme", "chat")
        assert not await repo.remember_message("acme", "chat", "in_1")  # a message accepted before the upgrade is still a replay
        assert await pool.fetchval(f"SELECT count(*) FROM {s}.inbound_messages WHERE endpoint_id = 'gone'") == 0
        # the same id in another tenant: its own (as SQL: rows written since migration 011 are sealed and signed, see
        # test_approval_sealed_endpoints_migration.py)
        await pool.execute(
            f"INSERT INTO {s}.webhook_endpoints (endpoint_id, url, secret, tenant_id) VALUES ('chat', 'https://evil/', 'y', 'evil')"
        )
        assert (
            await pool.fetchval(f"SELECT url FROM {s}.webhook_endpoints WHERE tenant_id = 'acme' AND endpoint_id = 'chat'") == "https://b/"
        )
        named = await pool.fetch(f"SELECT tenant_id FROM {s}.webhook_endpoints WHERE endpoint_id = 'chat' ORDER BY tenant_id")
        assert [r["tenant_id"] for r in named] == ["acme", "evil"]
    finally:
        await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await pool.close()
