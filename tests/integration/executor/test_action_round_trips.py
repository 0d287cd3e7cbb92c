"""The statements one executed action costs with its undo and the demo's tools, against the real database (issue #12)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from statements import Statements, counting_pool

import schemas as s
from servicekit import REPO_ROOT, EventOutlet, Keyring, KitSettings, Reject, ToolCatalog, apply_migrations
from servicekit.db import open_pool
from servicekit.row_proofs import ServiceKeys
from servicekit.signing import SigningKey
from services.executor import build
from services.executor.claims import PgClaimStore
from services.executor.credentials import CredentialStore
from services.executor.executor import Executor
from services.executor.tools import PythonTools, ToolInvokers
from services.executor.undo import PgUndoStore, undo_seals

MIGRATIONS = Path(__file__).resolve().parents[3] / "services" / "executor" / "migrations"


class Counted:
    """The executor with the demo's tools, each pool counting the statements it sends."""

    def __init__(self, executor: Executor, claims: Statements, tools: Statements, published: list[s.Envelope]) -> None:
        self.executor = executor
        self.claims = claims
        self.tools = tools
        self.published = published


@pytest.fixture
async def counted(infra: Any, kit: KitSettings, tenant: str) -> AsyncIterator[Counted]:
    """Pools as the service makes them: the claims' reset on release (it ends the claim's lock), the tools' not."""
    claims, tools = Statements(), Statements()
    pool = await counting_pool(infra.database_url, claims, max_size=4)
    tools_pool = await counting_pool(infra.database_url, tools, max_size=4, reset_session=False)
    await apply_migrations(pool, "executor", MIGRATIONS)
    published: list[s.Envelope] = []
    signer = SigningKey.load_or_create(kit.keys_dir, "executor")

    async def publish(topic: str, event: s.Envelope) -> None:
        published.append(event)

    executor = Executor(
        catalog=ToolCatalog.load(REPO_ROOT / "catalog" / "tools"),
        keyring_loader=lambda: Keyring.load(kit.keys_dir, "policy"),
        claims=PgClaimStore(pool, owner="test", prefix=f"art-{uuid.uuid4().hex[:8]}."),
        invokers=ToolInvokers(python=PythonTools(), http=PythonTools(), topic=PythonTools()),
        credentials=CredentialStore({}, {}),
        out=EventOutlet(publish),
        killed=lambda tenant, tool: None,
        context_pool=tools_pool,
        undo=PgUndoStore(pool, undo_seals(signer, ServiceKeys(kit.keys_dir, "executor", signer=signer))),
    )
    yield Counted(executor, claims, tools, published)
    await tools_pool.close()
    await pool.close()


async def test_an_undoable_action_takes_one_connection_and_its_tools_one_statement_each(
    counted: Counted, tenant: str, authorize: Callable[..., s.ActionAuthorized]
) -> None:
    tag = authorize(tenant, "tag_ticket", {"ticket_id": "T-1007", "tags": ["password"]})
    counted.claims.sent.clear()
    counted.tools.sent.clear()
    await counted.executor.handle(tag)
    [result] = counted.published
    assert (result.type, result.data.undo.args) == ("tidegate.action.succeeded", {"ticket_id": "T-1007", "tags": ["password"]})
    # claim, the look for a state kept before, running with the state read kept, the outcome with the plan, and one
    # reset: one connection, one release (7 statements before 2026-12-07, when the plan was a statement and a
    # transaction of its own; 6 until the state kept before was one too)
    assert len(counted.claims.sent) == 5, counted.claims.sent
    assert sum("pg_advisory_unlock_all" in q for q in counted.claims.sent) == 1
    assert len(counted.tools.sent) == 2, counted.tools.sent  # the ticket read before (get_ticket), then tag_ticket
    # Only the running mark (before the call) and the outcome (before the result is published) wait for the disk: the
    # claim is committed unflushed, and made durable by the flushed commit that follows it; the state kept before is
    # written by the running mark's own statement and the plan by the outcome's (CTEs), each durable with it, in the
    # same transaction: the state before the call is on disk before the call, as the claim is.
    writes = [q for q in counted.claims.sent if q.lstrip().upper().startswith(("INSERT", "UPDATE", "WITH"))]
    unflushed = [q for q in writes if "set_config('synchronous_commit', 'off', true)" in q]
    assert [q.split()[0:3] for q in unflushed] == [["INSERT", "INTO", "executor.actions"]]
    flushed = [q for q in writes if q not in unflushed]
    assert flushed[0].startswith("WITH w0 AS (INSERT INTO executor.undo_plans (action_id, tenant_id, task_id, tool, before,")
    assert "UPDATE executor.actions SET status = 'running'" in flushed[0]
    assert flushed[1].startswith("WITH w0 AS (INSERT INTO executor.undo_plans")
    assert "UPDATE executor.actions SET status" in flushed[1]
    assert len(flushed) == 2
    # what the outcome's statement kept is the plan the result carries, proven as the executor's, and what the running
    # mark's kept is the state read before the call, proven as the executor's too
    assert await counted.executor.undo.plan(tag.data.action_id) == result.data.undo
    kept = await counted.executor.undo.prior_state(tag.data.action_id)
    assert kept is not None
    assert "password" not in kept["tags"]

    note = authorize(tenant, "add_internal_note", {"ticket_id": "T-1007", "note": "checked"})
    counted.claims.sent.clear()
    counted.tools.sent.clear()
    await counted.executor.handle(note)
    assert counted.published[-1].data.undo.tool == "delete_internal_note"
    assert len(counted.claims.sent) == 3, counted.claims.sent  # claim (running), the outcome with the plan, the reset
    assert await counted.executor.undo.plan(note.data.action_id) == counted.published[-1].data.undo
    assert len(counted.tools.sent) == 1, counted.tools.sent


async def test_a_refused_action_is_claimed_with_its_outcome_in_one_flushed_statement(
    counted: Counted, tenant: str, authorize: Callable[..., s.ActionAuthorized]
) -> None:
    """An operator's kill switch and an expired authorization: nothing is called, the planner learns it failed.

    The claim and the outcome were two statements (and two transactions) before 2026-12-07; the claim now records the
    refusal and its result event itself, flushed before the result is published, which a redelivery is answered with.
    """
    counted.executor.killed = lambda tenant, tool: "incident 42: stop tagging" if tool == "tag_ticket" else None
    stopped = authorize(tenant, "tag_ticket", {"ticket_id": "T-1007", "tags": ["stopped"]})
    expired = authorize(tenant, "add_internal_note", {"ticket_id": "T-1007", "note": "late"}, ttl_s=-1)
    for event, error, dead in ((stopped, "kill_switch", False), (expired, "authorization_expired", True)):
        counted.claims.sent.clear()
        counted.tools.sent.clear()
        if dead:  # dead-lettered as well
            with pytest.raises(Reject):
                await counted.executor.handle(event)
        else:
            await counted.executor.handle(event)
        result = counted.published[-1]
        assert (result.type, result.data.action_id, result.data.error.type) == ("tidegate.action.failed", event.data.action_id, error)
        assert result.data.attempts == 0
        assert counted.tools.sent == []  # nothing called: not even the read before the call
        # the claim with the outcome and its result event, and the reset that ends the claim's lock
        assert len(counted.claims.sent) == 2, counted.claims.sent
        [claim, reset] = counted.claims.sent
        assert claim.startswith("INSERT INTO executor.actions")
        assert "result_event" in claim
        assert "synchronous_commit" not in claim  # flushed: the result is published after it is on disk
        assert "pg_advisory_unlock_all" in reset
        async with counted.executor.claims.hold(event.data.action_id) as session:  # what a redelivery is answered with
            kept = await session.get()
        assert kept is not None
        assert (kept.status, kept.attempts) == ("failed", 0)
        assert kept.result_event is not None
        assert result.id in kept.result_event  # the very event published, kept by the claim's statement
    counted.executor.killed = lambda tenant, tool: None


async def test_the_executors_own_pool_ends_a_claims_lock_on_release_in_one_statement(kit: KitSettings) -> None:
    """The pool the executor's wiring point builds: a released connection's only reset is `pg_advisory_unlock_all()`.

    Its only session state is the claims' session advisory locks; asyncpg's reset also ran `CLOSE ALL; UNLISTEN *;
    RESET ALL` on every release, three more statements an action for PostgreSQL to parse and run (before 2026-12-07).
    """
    process = build(kit)
    assert process.pool is not None
    await open_pool(process.pool, "the executor's database")
    other = await asyncpg.connect(kit.database_url)
    try:
        sent: list[str] = []
        async with process.pool.acquire() as conn:
            conn.add_query_logger(lambda record: sent.append(record.query))
            assert await conn.fetchval("SELECT pg_try_advisory_lock(4242)")
            assert not await other.fetchval("SELECT pg_try_advisory_lock(4242)")  # held by the claim's connection
            sent.clear()
        assert sent == ["SELECT pg_advisory_unlock_all()"]
        assert await other.fetchval("SELECT pg_try_advisory_lock(4242)")  # the release ended it
    finally:
        await other.close()
        await process.pool.close()
