"""The chat bridge is back after a night's outage: on the real database, a delivery brings its endpoint's waiting messages forward.

The on-call's night (findings/oncall3.md): a request's message queued as the receiver went down waited out a backoff of
8.5 min, and was sent 7 min after the receiver was back, while newer messages to it went through at once. One statement
(the attempt's own update) now also makes the endpoint's messages waiting out a backoff due; a message another round
holds under its lease, a fresh one, another endpoint's, and a failed attempt leave everything as it was.
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


async def test_a_delivery_brings_forward_only_its_endpoints_messages_waiting_out_a_backoff(infra: Any, kit: KitSettings) -> None:
    schema = f"approval_back_{uuid.uuid4().hex[:8]}"
    pool = await counting_pool(infra.database_url, Statements(), max_size=2, reset_session=False)  # as the service's pool
    now = datetime.now(UTC)
    lease = timedelta(seconds=25)
    try:
        await apply_migrations(pool, schema, REPO_ROOT / "services" / "approval" / "migrations")
        repo = PgApprovalRepository(pool, schema, seals=service_seals(kit))
        for endpoint_id in ("chat", "other"):
            await repo.upsert_endpoint(Endpoint(endpoint_id, f"https://{endpoint_id}.example/hook", webhooks.new_secret(), "acme"))
        rows = {  # id: (endpoint, attempts so far, next attempt)
            "msg_missed": ("chat", 9, now + timedelta(minutes=7)),  # queued as the receiver went down
            "msg_leased": ("chat", 3, now + timedelta(seconds=20)),  # another round holds it: within the lease
            "msg_fresh": ("chat", 0, now + timedelta(minutes=7)),  # never attempted (a test's clock): not a backoff
            "msg_other": ("other", 9, now + timedelta(minutes=7)),  # another receiver, still down
            "msg_sent": ("chat", 0, now),  # the one the receiver just took
        }
        await repo._write_side(pool, [], [Delivery(i, e, "acme", f"ap-{i}", "approval.requested", "{}") for i, (e, _, _) in rows.items()])
        for delivery_id, (_, attempts, due) in rows.items():
            await pool.execute(
                f'UPDATE "{schema}".webhook_deliveries SET attempts = $2, next_attempt_at = $3 WHERE delivery_id = $1',
                delivery_id,
                attempts,
                due,
            )

        async def due() -> dict[str, datetime]:
            found = await pool.fetch(f"SELECT delivery_id, next_attempt_at FROM \"{schema}\".webhook_deliveries WHERE status = 'pending'")
            return {r["delivery_id"]: r["next_attempt_at"] for r in found}

        await repo.record_attempt(  # still down: nothing moves
            "msg_sent", 1, status_code=None, error="ConnectError", duration_ms=1.0, outcome="pending", next_at=now + timedelta(seconds=1),
            waiting_due=(now, now + lease),
        )  # fmt: skip
        assert (await due())["msg_missed"] == rows["msg_missed"][2]

        await repo.record_attempt(
            "msg_sent", 2, status_code=204, error=None, duration_ms=1.0, outcome="delivered", next_at=None, waiting_due=(now, now + lease)
        )
        after = await due()
        assert "msg_sent" not in after
        assert after["msg_missed"] == now  # due at once: the next round sends it
        assert after["msg_leased"] == rows["msg_leased"][2]
        assert after["msg_fresh"] == rows["msg_fresh"][2]
        assert after["msg_other"] == rows["msg_other"][2]
        claimed = await repo.claim_due_deliveries(now + timedelta(seconds=1), lease)
        assert [d.delivery_id for d, _ in claimed] == ["msg_missed"]
    finally:
        await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await pool.close()


async def test_a_requests_decision_is_not_sent_before_its_request_waiting_out_a_backoff(infra: Any, kit: KitSettings) -> None:
    """The chat reader (upgrade25), on the real database: the request's message waits out a backoff, its decision's is due.
    The claim takes both, the request's first; a decision whose request's message another round holds waits for it."""
    schema = f"approval_order_{uuid.uuid4().hex[:8]}"
    pool = await counting_pool(infra.database_url, Statements(), max_size=2, reset_session=False)
    now = datetime.now(UTC)
    lease = timedelta(seconds=25)
    try:
        await apply_migrations(pool, schema, REPO_ROOT / "services" / "approval" / "migrations")
        repo = PgApprovalRepository(pool, schema, seals=service_seals(kit))
        await repo.upsert_endpoint(Endpoint("chat", "https://chat.example/hook", webhooks.new_secret(), "acme"))
        rows = {  # id: (request, type, attempts so far, next attempt, queued)
            "msg_asked": ("ap-1", "approval.requested", 9, now + timedelta(minutes=7), now - timedelta(minutes=10)),
            "msg_granted": ("ap-1", "approval.granted", 0, now, now - timedelta(seconds=5)),
            "msg_asked_leased": ("ap-2", "approval.requested", 9, now + timedelta(seconds=20), now - timedelta(minutes=9)),
            "msg_rejected": ("ap-2", "approval.rejected", 0, now, now - timedelta(seconds=4)),
            "msg_alone": ("ap-3", "approval.requested", 0, now, now - timedelta(seconds=3)),
        }
        await repo._write_side(pool, [], [Delivery(i, "chat", "acme", a, t, "{}") for i, (a, t, *_) in rows.items()])
        for delivery_id, (*_, attempts, due, queued) in rows.items():
            await pool.execute(
                f'UPDATE "{schema}".webhook_deliveries SET attempts = $2, next_attempt_at = $3, created_at = $4 WHERE delivery_id = $1',
                delivery_id,
                attempts,
                due,
                queued,
            )

        claimed = await repo.claim_due_deliveries(now + timedelta(seconds=1), lease)

        assert [d.delivery_id for d, _ in claimed] == ["msg_asked", "msg_granted", "msg_alone"]
    finally:
        await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await pool.close()
