"""The executor's claims against the real database: the statements one action costs, and the lock that makes it run once."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from statements import Statements, counting_pool

import schemas as s
from servicekit import EventOutlet, Keyring, KitSettings, SigningKey, ToolCatalog, apply_migrations
from servicekit.authority import deployment_authority
from servicekit.intake import DATABASE_ERRORS
from servicekit.row_proofs import ServiceKeys
from servicekit.toolcontract import ToolContext
from services.executor.claims import PgClaimStore
from services.executor.credentials import CredentialStore
from services.executor.domain import ClaimRecord
from services.executor.executor import Executor
from services.executor.tools import ToolAnswer, ToolInvokers
from services.executor.undo import PgUndoStore, UndoKey, undo_seals

WAITING_FOR_LOCK = (
    "SELECT true FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND ((classid::bigint << 32) | objid::bigint) = $1"
)
MIGRATIONS = Path(__file__).resolve().parents[3] / "services" / "executor" / "migrations"


def _lock_key(action_id: str) -> int:
    """The advisory lock key of an action id, as the executor computes it."""
    return int.from_bytes(hashlib.sha256(f"executor:{action_id}".encode()).digest()[:8], "big", signed=True)


@dataclass
class GatedTool:
    """A tool that counts its calls and, when `gate` is set, waits for it before answering."""

    calls: int = 0
    gate: asyncio.Event | None = None
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def invoke(self, spec: s.ToolSpec, ctx: ToolContext, args: dict[str, Any]) -> ToolAnswer:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        return ToolAnswer({"ok": True})


@dataclass
class Rig:
    executor: Executor
    tool: GatedTool
    published: list[s.Envelope]
    statements: list[str]


@pytest.fixture
async def logged_pool(infra: Any) -> AsyncIterator[tuple[asyncpg.Pool, list[str]]]:
    """A pool that resets released connections (as the executor's does) and logs every statement sent."""
    statements = Statements()
    pool = await counting_pool(infra.database_url, statements, max_size=4)
    await apply_migrations(pool, "executor", MIGRATIONS)
    yield pool, statements.sent
    await pool.close()


@pytest.fixture
def rig(logged_pool: tuple[asyncpg.Pool, list[str]], kit: KitSettings, policy_key: SigningKey) -> Rig:
    pool, statements = logged_pool
    tool = GatedTool()
    published: list[s.Envelope] = []

    async def publish(topic: str, event: s.Envelope) -> None:
        published.append(event)

    spec = s.ToolSpec.model_validate(
        {
            "name": "refund",
            "description": "d",
            "args_schema": {"type": "object"},
            "risk": "financial",
            "kind": "python",
            "entrypoint": "m:f",
        }
    )
    keyed = spec.model_copy(update={"name": "keyed_refund", "accepts_idempotency_key": True})  # safe to call again after a crash
    executor = Executor(
        catalog=ToolCatalog({"refund": spec, "keyed_refund": keyed}),
        keyring_loader=lambda: Keyring.load(kit.keys_dir, "policy"),
        claims=PgClaimStore(pool, owner="test", prefix=f"rt-{uuid.uuid4().hex[:8]}."),
        invokers=ToolInvokers(python=tool, http=tool, topic=tool),
        credentials=CredentialStore({}, {}),
        out=EventOutlet(publish, signer=SigningKey.load_or_create(kit.keys_dir, "executor")),  # signs as the service's bus does
        killed=lambda tenant, tool: None,
        authority=deployment_authority(kit),  # a kept result is published again only as the executor's own
    )
    return Rig(executor, tool, published, statements)


async def test_an_action_costs_three_statements_and_its_redelivery_three(rig: Rig, authorize: Callable[..., s.ActionAuthorized]) -> None:
    event = authorize("acme", "refund", {"amount_usd": 10})
    rig.statements.clear()
    await rig.executor.handle(event)
    first = list(rig.statements)
    # lock + claim marked running, outcome + result event, and the reset of the released connection (which unlocks)
    assert len(first) == 3, first
    assert "pg_advisory_lock" in first[0]
    assert "INSERT" in first[0]
    assert "pg_advisory_unlock_all" in first[-1]

    rig.statements.clear()
    await rig.executor.handle(event)  # redelivered: answered from the record
    assert len(rig.statements) == 3, rig.statements
    assert rig.tool.calls == 1
    assert [e.id for e in rig.published] == [rig.published[0].id] * 2
    assert isinstance(rig.published[0], s.ActionSucceeded)


async def test_a_redelivery_during_the_call_waits_for_the_outcome_and_never_calls_again(
    rig: Rig,
    authorize: Callable[..., s.ActionAuthorized],
    logged_pool: tuple[asyncpg.Pool, list[str]],
    wait_for: Callable[..., Awaitable[Any]],
) -> None:
    pool, _ = logged_pool
    event = authorize("acme", "refund", {"amount_usd": 10})
    rig.tool.gate = asyncio.Event()
    first = asyncio.create_task(rig.executor.handle(event))
    await asyncio.wait_for(rig.tool.entered.wait(), 30)
    # What a crash now would leave: the call marked running (settled or called again, never silently dropped).
    row = await pool.fetchrow("SELECT status, attempts FROM executor.actions WHERE action_id = $1", event.data.action_id)
    assert (row["status"], row["attempts"]) == ("running", 1)
    second = asyncio.create_task(rig.executor.handle(event))
    await wait_for(lambda: pool.fetchval(WAITING_FOR_LOCK, _lock_key(event.data.action_id)), what="the redelivery waiting for the lock")
    assert not second.done(), "the redelivery must wait for the call in flight"
    rig.tool.gate.set()
    await asyncio.wait_for(asyncio.gather(first, second), 30)
    assert rig.tool.calls == 1
    assert [type(e) for e in rig.published] == [s.ActionSucceeded, s.ActionSucceeded]
    assert rig.published[0].id == rig.published[1].id  # the second read the outcome committed while it waited


async def test_the_lock_ends_with_the_claim_even_when_the_work_fails(rig: Rig, logged_pool: tuple[asyncpg.Pool, list[str]]) -> None:
    pool, _ = logged_pool
    store = rig.executor.claims
    record = ClaimRecord(f"a-{uuid.uuid4().hex[:12]}", "ev-1", "acme", "t-1", 1, "refund", {}, "sha256:x", "claimed")
    key = _lock_key(record.action_id)
    async with pool.acquire() as outsider:

        async def claim_then_fail() -> None:
            async with store.claim(record) as (_, kept):
                assert kept == record
                assert not await outsider.fetchval("SELECT pg_try_advisory_lock($1)", key), "held while claimed"
                raise RuntimeError("tool blew up")

        with pytest.raises(RuntimeError, match="tool blew up"):
            await claim_then_fail()
        assert await outsider.fetchval("SELECT pg_try_advisory_lock($1)", key), "released with the connection"


async def test_the_state_before_a_call_is_kept_once_and_the_first_read_wins(
    logged_pool: tuple[asyncpg.Pool, list[str]], tmp_path: Path
) -> None:
    """An undo's prior state, kept in one statement: after a crash the first state read is what the undo restores."""
    pool, statements = logged_pool
    key = SigningKey.load_or_create(tmp_path, "executor")
    undo = PgUndoStore(pool, undo_seals(key, ServiceKeys(tmp_path, "executor", signer=key)))
    call = UndoKey(f"a-{uuid.uuid4().hex[:12]}", "acme", "t-1", "tag_ticket")
    statements.clear()
    assert await undo.keep_prior_state(call, {"tags": ["vip"]}) == {"tags": ["vip"]}
    assert [q for q in statements if "pg_advisory_unlock_all" not in q] == [statements[0]], statements
    assert await undo.keep_prior_state(call, {"tags": ["vip", "refund"]}) == {"tags": ["vip"]}  # read again after the call: not kept
    assert await undo.prior_state(call.action_id) == {"tags": ["vip"]}


async def test_a_call_interrupted_mid_way_and_found_expired_on_redelivery_ends_unknown_without_a_dead_letter(
    rig: Rig, authorize: Callable[..., s.ActionAuthorized], logged_pool: tuple[asyncpg.Pool, list[str]]
) -> None:
    """The claim and the call happened, then the process died; the authorization expired before its redelivery.

    The authorization was used: the action ends as an interrupted call (unknown, a person checks), never as a refusal.
    """
    pool, _ = logged_pool
    event = authorize("acme", "keyed_refund", {"amount_usd": 10}, ttl_s=60)
    rig.tool.gate = asyncio.Event()  # never set: the call hangs until the "crash"
    first = asyncio.create_task(rig.executor.handle(event))
    await asyncio.wait_for(rig.tool.entered.wait(), 30)
    first.cancel()  # the process dies mid-call: its connection, and so its lock, goes
    with pytest.raises(asyncio.CancelledError):
        await first
    row = await pool.fetchrow("SELECT status, attempts FROM executor.actions WHERE action_id = $1", event.data.action_id)
    assert (row["status"], row["attempts"]) == ("running", 1)

    rig.executor.clock = lambda: datetime.now(UTC) + timedelta(minutes=5)  # redelivered after the expiry
    await rig.executor.handle(event)  # no Reject: no dead letter for an authorization that was used
    assert rig.tool.calls == 1
    [result] = rig.published
    assert isinstance(result, s.ActionUnknown)
    assert (result.data.error.type, result.data.attempts) == ("interrupted", 1)
    assert "since then: authorization expired at" in result.data.error.message
    row = await pool.fetchrow("SELECT status, error FROM executor.actions WHERE action_id = $1", event.data.action_id)
    assert row["status"] == "unknown"
    assert "dead_letter" not in json.loads(row["error"])
    assert await rig.executor.settle_interrupted() == 0  # nothing left running for the start-up to settle


async def test_the_database_lost_while_the_tool_answered_is_recorded_as_the_answer_on_the_next_try(
    rig: Rig, authorize: Callable[..., s.ActionAuthorized], logged_pool: tuple[asyncpg.Pool, list[str]], infra: Any
) -> None:
    """PostgreSQL restarted during a Zendesk call that answered 200 (connectors probe F3): the executor had the answer and
    ended the note `unknown`, "the executor stopped during a call … a person must check". Here the executor's backends are
    terminated (what a restart does to them) while the tool is answering; the bus's retry of the handler records the answer."""
    pool, _ = logged_pool
    event = authorize("acme", "refund", {"amount_usd": 10})  # not safe to call again: only the answer in hand can end it well
    rig.tool.gate = asyncio.Event()
    first = asyncio.create_task(rig.executor.handle(event))
    await asyncio.wait_for(rig.tool.entered.wait(), 30)
    admin = await asyncpg.connect(infra.admin_database_url)
    try:
        mine = await admin.fetchval(  # the backend that holds the action's claim (its advisory lock)
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND ((classid::bigint << 32) | objid::bigint) = $1",
            _lock_key(event.data.action_id),
        )
    finally:
        await admin.close()
    assert mine == 1
    rig.tool.gate.set()
    with pytest.raises(DATABASE_ERRORS):  # what the bus retries, its pool's connections expired (`discard_broken_connections`)
        await asyncio.wait_for(first, 30)
    assert rig.published == []
    await pool.expire_connections()
    await rig.executor.handle(event)  # the bus's retry of the handler
    [result] = rig.published
    assert (type(result), result.data.attempts) == (s.ActionSucceeded, 1)
    assert rig.tool.calls == 1
    row = await pool.fetchrow("SELECT status FROM executor.actions WHERE action_id = $1", event.data.action_id)
    assert row["status"] == "succeeded"
