"""Two deployments on separate topic prefixes share a database: each executor settles only its own interrupted calls."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg

from servicekit import apply_migrations
from services.executor.claims import PgClaimStore
from services.executor.domain import ClaimRecord

MIGRATIONS = Path(__file__).resolve().parents[3] / "services" / "executor" / "migrations"


async def _left_running(store: PgClaimStore, action_id: str) -> None:
    record = ClaimRecord(action_id, "ev-1", "acme", "t-1", 1, "issue_refund", {}, "sha256:x", "claimed")
    async with store.hold(action_id) as session:
        await session.claim(record)
        await session.running(attempts=1)  # …and the process dies here


async def test_an_executor_settles_only_its_own_prefixes_interrupted_calls(pool: asyncpg.Pool) -> None:
    await apply_migrations(pool, "executor", MIGRATIONS)
    run = uuid.uuid4().hex[:8]
    blue, green = PgClaimStore(pool, "blue", prefix=f"blue-{run}."), PgClaimStore(pool, "green", prefix=f"green-{run}.")
    await _left_running(blue, f"blue-{run}-a")
    await _left_running(green, f"green-{run}-a")
    assert [r.action_id for r in await blue.interrupted()] == [f"blue-{run}-a"]
    assert [r.action_id for r in await green.interrupted()] == [f"green-{run}-a"]
