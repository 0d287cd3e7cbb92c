"""Upgrading to sealed, signed webhook endpoints (migration 011): clear secrets are dropped, old rows refused until re-registered."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

from approval_harness import service_seals

from servicekit import REPO_ROOT, KitSettings, create_pool
from servicekit.db import apply_migrations
from services.approval import webhooks
from services.approval.repository import Endpoint, PgApprovalRepository

MIGRATIONS = REPO_ROOT / "services" / "approval" / "migrations"
SEALED = "011_sealed_endpoints.sql"


async def test_an_endpoint_from_before_loses_its_clear_secret_and_is_refused_until_registered_again(
    infra: Any, kit: KitSettings, tmp_path: Path
) -> None:
    schema = f"approval_sealed_{uuid.uuid4().hex[:8]}"
    before = tmp_path / "migrations"
    before.mkdir()
    for path in sorted(MIGRATIONS.glob("*.sql")):
        if path.name < SEALED:
            shutil.copy(path, before / path.name)
    pool = await create_pool(infra.database_url, max_size=2)
    try:
        await apply_migrations(pool, schema, before)
        s = f'"{schema}"'
        secret = webhooks.new_secret()
        await pool.execute(
            f"INSERT INTO {s}.webhook_endpoints (endpoint_id, url, secret, tenant_id, approvers) VALUES ('chat', 'https://b/', $1, 'acme', "
            "'{bob@acme.example}')",
            secret,
        )
        shutil.copy(MIGRATIONS / SEALED, before / SEALED)
        assert await apply_migrations(pool, schema, before) == [SEALED]
        assert await pool.fetchval(f"SELECT secret FROM {s}.webhook_endpoints") is None  # the login could read it: gone
        for path in sorted(MIGRATIONS.glob("*.sql")):  # the later ones too, as the service runs on them
            shutil.copy(path, before / path.name)
        await apply_migrations(pool, schema, before)

        repo = PgApprovalRepository(pool, schema, seals=service_seals(kit))
        assert await repo.endpoint("acme", "chat") is None
        assert await repo.endpoints("acme") == []
        (listed,) = await repo.endpoints_of("acme")
        assert (listed.url, listed.unproven) == ("https://b/", "unsigned")

        await repo.upsert_endpoint(Endpoint("chat", "https://b/", secret, "acme"))  # what registering it again writes
        again = await repo.endpoint("acme", "chat")
        assert again is not None
        assert (again.secret, again.approvers, again.unproven) == (secret, (), None)
    finally:
        await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await pool.close()
