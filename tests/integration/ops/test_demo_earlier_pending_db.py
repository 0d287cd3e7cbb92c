"""The demo's read of the approvals an earlier run left pending, on the approval service's real table (its migrations)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from servicekit import REPO_ROOT, apply_migrations, create_pool
from tidegate.demo.run import pending_before

pytestmark = pytest.mark.integration


async def test_only_the_tenants_approvals_still_waiting_are_read(infra: Any) -> None:
    schema = f"approval_demo_{uuid.uuid4().hex[:8]}"
    pool = await create_pool(infra.database_url, max_size=2)
    now = datetime.now(UTC)
    try:
        assert await pending_before(pool, "acme", schema) == []  # the approval service never ran: nothing, no error
        await apply_migrations(pool, schema, REPO_ROOT / "services" / "approval" / "migrations")
        rows = [  # (id, tenant, status, expires in): only the first is an earlier run's approval still waiting
            ("ap-waiting", "acme", "pending", timedelta(hours=1)),
            ("ap-overdue", "acme", "pending", -timedelta(minutes=1)),
            ("ap-granted", "acme", "granted", timedelta(hours=1)),
            ("ap-globex", "globex", "pending", timedelta(hours=1)),
        ]
        for approval_id, tenant, status, expires in rows:
            await pool.execute(
                f"INSERT INTO {schema}.approvals (approval_id, kind, action_id, task_id, tenant_id, tool, status, version, "
                "created_at, expires_at, record) VALUES ($1, 'approval', $1, 'demo-1a2b3c4d-T-1001', $2, 'issue_refund', $3, 1, "
                "$4, $5, $6::jsonb)",
                approval_id, tenant, status, now, now + expires, json.dumps({}),
            )  # fmt: skip
        (earlier,) = await pending_before(pool, "acme", schema)
        assert (earlier.approval_id, earlier.task_id, earlier.tool) == ("ap-waiting", "demo-1a2b3c4d-T-1001", "issue_refund")
    finally:
        await pool.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await pool.close()
