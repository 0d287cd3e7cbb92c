"""The approval's webhook round finds nothing due most of the time (every second at idle): one statement then, not three.

A round's claim opened a transaction for its one `UPDATE … RETURNING` (BEGIN, the update, COMMIT) even with nothing due:
three statements a second of an idle service (docs/benchmarks.md, 2026-12-07). It now looks first, with one indexed
statement, and claims only when something is due; what it claims, and how, is unchanged. Against the real database.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from approval_harness import service_seals
from statements import Statements, counting_pool

from servicekit import REPO_ROOT, KitSettings
from servicekit.db import apply_migrations
from services.approval import webhooks
from services.approval.repository import Delivery, Endpoint, PgApprovalRepository


async def test_a_round_with_nothing_due_sends_one_statement_and_a_due_message_is_still_claimed_and_leased(
    infra: Any, kit: KitSettings
) -> None:
    schema = f"approval_idle_{uuid.uuid4().hex[:8]}"
    statements = Statements()
    pool = await counting_pool(infra.database_url, statements, max_size=2, reset_session=False)  # as the service's pool
    try:
        await apply_migrations(pool, schema, REPO_ROOT / "services" / "approval" / "migrations")
        repo = PgApprovalRepository(pool, schema, seals=service_seals(kit))
        await repo.upsert_endpoint(Endpoint("chat", "https://chat.example/hook", webhooks.new_secret(), "acme"))
        later = Delivery("msg_later", "chat", "acme", "ap-1", "approval.requested", "{}")
        await repo._write_side(pool, [], [later])
        await pool.execute(
            f'UPDATE "{schema}".webhook_deliveries SET next_attempt_at = $2 WHERE delivery_id = $1',
            later.delivery_id,
            datetime.now(UTC) + timedelta(minutes=5),
        )
        statements.counted()

        assert await repo.claim_due_deliveries(datetime.now(UTC), timedelta(seconds=30)) == []  # pending, not yet due
        assert statements.counted() == 1  # was BEGIN, the claim's UPDATE, COMMIT

        claimed = await repo.claim_due_deliveries(datetime.now(UTC) + timedelta(minutes=6), timedelta(seconds=30))
        assert [(d.delivery_id, e.endpoint_id) for d, e in claimed] == [("msg_later", "chat")]
        leased = await pool.fetchval(f'SELECT next_attempt_at FROM "{schema}".webhook_deliveries WHERE delivery_id = $1', "msg_later")
        assert leased > datetime.now(UTC) + timedelta(minutes=6)  # leased: no other copy claims it meanwhile
        assert await repo.claim_due_deliveries(datetime.now(UTC) + timedelta(minutes=6), timedelta(seconds=30)) == []
    finally:
        await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await pool.close()
