"""The planner's PostgreSQL repository: one application per event, and an outbox that survives a crash before publishing."""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from schemas import ActionCounts, ActionDecided, ActionDecidedData, ActionResultData, Reason, ResultCost, action_identity, utcnow
from servicekit import REPO_ROOT, SigningKey, ToolCatalog, create_pool
from servicekit.db import apply_migrations, open_pool, unopened_pool
from services.planner import domain
from services.planner.app import build
from services.planner.repository import Change, PostgresTaskRepository, forget_applied
from services.planner.settings import PlannerSettings
from services.planner.state_seal import StateSeal
from services.planner.strategies import PlaybookStrategy
from services.planner.task_state import CostRates, PlannedStep, StepTimeouts, TaskState, Transition
from systems.seed import TICKETS
from tidegate.demo.tickets import ticket_task

with tempfile.TemporaryDirectory() as _keys:  # the planner's key: its current key is known without the folder
    SEAL = StateSeal(SigningKey.load_or_create(Path(_keys), "planner"), Path(_keys))

RATES = CostRates()


async def test_an_event_is_applied_once_and_its_events_are_handed_back_until_published(infra):
    pool = await create_pool(infra.database_url, max_size=2)
    try:
        await apply_migrations(pool, "planner", REPO_ROOT / "services" / "planner" / "migrations")
        repo = PostgresTaskRepository(pool, RATES, seal=SEAL)
        catalog = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
        task = ticket_task(TICKETS[6], task_id=f"repo-{uuid.uuid4().hex[:8]}")
        plan = await PlaybookStrategy(catalog).plan(task)

        def start(state):
            return (
                None
                if state is not None
                else domain.start_task(task, plan.steps, strategy="playbook", now=utcnow(), rates=RATES, read_only=frozenset())
            )

        first = await repo.apply("ev-1", task.tenant_id, task.task_id, start)
        [proposal] = first
        # Redelivered before `published`: the same event, same outbox row.
        again = await repo.apply("ev-1", task.tenant_id, task.task_id, start)
        assert [(p.outbox_id, p.event.id) for p in again] == [(proposal.outbox_id, proposal.event.id)]
        restarted = await PostgresTaskRepository(pool, RATES, seal=SEAL).apply(
            "ev-1", task.tenant_id, task.task_id, start
        )  # to a copy that never saw the task
        assert [(p.outbox_id, p.event.id) for p in restarted] == [(proposal.outbox_id, proposal.event.id)]
        await repo.published([proposal.outbox_id])
        assert await repo.apply("ev-1", task.tenant_id, task.task_id, start) == []

        p = proposal.event.data
        decided = ActionDecidedData(
            action_id=p.action_id,
            task_id=p.task_id,
            tenant_id=p.tenant_id,
            step=p.step,
            tool=p.tool,
            args=p.args,
            action_digest="d",
            outcome="deny",
            reasons=[Reason(code="kill_switch", policy_id="k")],
            policy_version="v",
            latency_ms=1,
        )
        event = ActionDecided.build(decided, source="test")

        def deny(state):
            return domain.on_decision(state, event.data, utcnow(), RATES, frozenset()) if state is not None else None

        [outcome] = await repo.apply(event.id, task.tenant_id, task.task_id, deny)
        assert outcome.event.type == "tidegate.task.failed"
        [redelivered] = await repo.apply(event.id, task.tenant_id, task.task_id, deny)
        assert redelivered.event.id == outcome.event.id
        state = await repo.get(task.tenant_id, task.task_id)
        assert state.status == "failed"
        assert state.counts.denied == 1
        rows = await pool.fetch("SELECT step, status, reasons FROM planner.steps WHERE task_id = $1", task.task_id)
        assert [(r["step"], r["status"]) for r in rows] == [(1, "denied")]
        assert await pool.fetchval("SELECT count(*) FROM planner.processed_events WHERE task_id = $1", task.task_id) == 2
    finally:
        await pool.close()


async def test_open_tasks_waiting_past_a_cutoff_are_found_and_a_timeout_outcome_is_kept_until_published(infra):
    from datetime import timedelta

    pool = await create_pool(infra.database_url, max_size=2)
    try:
        await apply_migrations(pool, "planner", REPO_ROOT / "services" / "planner" / "migrations")
        repo = PostgresTaskRepository(pool, RATES, seal=SEAL, prefix=f"test-{uuid.uuid4().hex[:8]}.")
        catalog = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
        task = ticket_task(TICKETS[6], task_id=f"repo-{uuid.uuid4().hex[:8]}")
        plan = await PlaybookStrategy(catalog).plan(task)
        then = utcnow() - timedelta(hours=1)
        start = lambda state: domain.start_task(task, plan.steps, strategy="playbook", now=then, rates=RATES, read_only=frozenset())  # noqa: E731
        [proposal] = await repo.apply(f"ev-{task.task_id}", task.tenant_id, task.task_id, start)
        await repo.published([proposal.outbox_id])
        assert (task.tenant_id, task.task_id) not in await repo.waiting_since_before(then)
        assert (task.tenant_id, task.task_id) in await repo.waiting_since_before(then + timedelta(seconds=1), limit=100_000)
        other = PostgresTaskRepository(pool, RATES, seal=SEAL, prefix="another-deployment.")  # same database, another deployment
        assert (task.tenant_id, task.task_id) not in await other.waiting_since_before(then + timedelta(seconds=1), limit=100_000)

        timeouts = StepTimeouts(default_s=60)
        tick = lambda state: domain.on_tick(state, utcnow(), RATES, timeouts) if state is not None else None  # noqa: E731
        event_id = f"step-timeout:{task.task_id}:1"
        [outcome] = await repo.apply(event_id, task.tenant_id, task.task_id, tick)
        assert outcome.event.data.reason == "step_timeout"
        assert [p.event.id for p in await repo.unpublished(event_id)] == [outcome.event.id]
        await repo.published([outcome.outbox_id])
        assert await repo.unpublished(event_id) == []
        assert (task.tenant_id, task.task_id) not in await repo.waiting_since_before(utcnow(), limit=100_000)  # closed
    finally:
        await pool.close()


def _started(task_id: str) -> tuple[Any, Change]:
    task = ticket_task(TICKETS[6], task_id=task_id)
    steps = [PlannedStep(tool="get_ticket", args={"ticket_id": TICKETS[6].ticket_id})]
    return task, lambda state: domain.start_task(task, steps, strategy="playbook", now=utcnow(), rates=RATES, read_only=frozenset())


def _noted(field: str, value: str, seen: list[TaskState] | None = None) -> Change:
    """A change that sets `field` of the task (and records the state it was given)."""

    def change(state: TaskState | None) -> Transition | None:
        if state is None:
            return None
        if seen is not None:
            seen.append(state)
        return Transition(state=state.model_copy(update={field: value}))

    return change


async def test_an_event_of_a_task_this_process_wrote_last_is_applied_in_one_statement(infra):
    """No read, no BEGIN/COMMIT, no lock; the outbox entries of a batch are deleted in one more statement."""
    pool = unopened_pool(infra.database_url, max_size=1, reset_session=False)  # as the service opens it
    await open_pool(pool, infra.database_url)
    try:
        await apply_migrations(pool, "planner", REPO_ROOT / "services" / "planner" / "migrations")
        repo = PostgresTaskRepository(pool, RATES, seal=SEAL)
        task, start = _started(f"repo-{uuid.uuid4().hex[:8]}")
        [proposal] = await repo.apply(f"ev-{task.task_id}", task.tenant_id, task.task_id, start)
        sent: list[str] = []
        async with pool.acquire() as conn:
            conn.add_query_logger(lambda record: sent.append(record.query))
        await repo.apply(f"ev2-{task.task_id}", task.tenant_id, task.task_id, _noted("summary", "noted"))
        assert len(sent) == 1, sent
        await repo.published([proposal.outbox_id])
        assert len(sent) == 2
        assert (await repo.get(task.tenant_id, task.task_id)).summary == "noted"

        fresh = PostgresTaskRepository(pool, RATES, seal=SEAL)  # a restarted process: the task is read first
        sent.clear()
        await fresh.apply(f"ev3-{task.task_id}", task.tenant_id, task.task_id, _noted("reason", "after a restart"))
        assert len(sent) == 2, sent
        sent.clear()
        redelivered = await fresh.apply(f"ev3-{task.task_id}", task.tenant_id, task.task_id, _noted("reason", "after a restart"))
        assert redelivered == []
        assert len(sent) == 3, sent  # the refused write, the read that finds it applied, its (empty) outbox

        another, start_another = _started(f"repo-{uuid.uuid4().hex[:8]}")
        sent.clear()
        await fresh.apply(f"ev-{another.task_id}", another.tenant_id, another.task_id, start_another)
        assert len(sent) == 1, sent  # a new task is written at once: its insert is the guard
    finally:
        await pool.close()


async def test_a_process_keeps_the_states_of_as_many_tasks_as_its_setting_and_reads_the_others_first(infra, kit):
    """`TIDEGATE_PLANNER_CACHED_TASKS` trades memory (each kept state) for a read and a parse per event of a task not kept."""
    assert build(kit, PlannerSettings(cached_tasks=3)).planner.repo.cached_tasks == 3  # type: ignore[attr-defined]
    pool = unopened_pool(infra.database_url, max_size=1, reset_session=False)
    await open_pool(pool, infra.database_url)
    try:
        await apply_migrations(pool, "planner", REPO_ROOT / "services" / "planner" / "migrations")
        sent: list[str] = []
        async with pool.acquire() as conn:  # the pool's one connection
            conn.add_query_logger(lambda record: sent.append(record.query))
        for kept, statements in ((1, [1, 2]), (0, [2, 2])):
            repo = PostgresTaskRepository(pool, RATES, seal=SEAL, cached_tasks=kept)
            first, start_first = _started(f"repo-{uuid.uuid4().hex[:8]}")
            second, start_second = _started(f"repo-{uuid.uuid4().hex[:8]}")
            await repo.apply(f"ev-{first.task_id}", first.tenant_id, first.task_id, start_first)
            # With one kept, the first task's state goes.
            await repo.apply(f"ev-{second.task_id}", second.tenant_id, second.task_id, start_second)
            counted = []
            for task in (second, first):  # the task written last, then the one before it
                sent.clear()
                await repo.apply(f"ev2-{task.task_id}", task.tenant_id, task.task_id, _noted("summary", "noted"))
                counted.append(len(sent))
                assert (await repo.get(task.tenant_id, task.task_id)).summary == "noted"
            assert counted == statements, (kept, counted)  # a task not kept: its read, then its write
            assert len(repo._states) <= kept
    finally:
        await pool.close()


async def test_a_task_another_copy_changed_is_applied_to_its_fresh_state(infra):
    """Two copies of the planner share tasks (the step-timeout sweep runs in each): neither applies an event to a stale state."""
    pool = await create_pool(infra.database_url, max_size=3)
    try:
        await apply_migrations(pool, "planner", REPO_ROOT / "services" / "planner" / "migrations")
        ours, other = PostgresTaskRepository(pool, RATES, seal=SEAL), PostgresTaskRepository(pool, RATES, seal=SEAL)
        task, start = _started(f"repo-{uuid.uuid4().hex[:8]}")
        await ours.apply(f"ev-{task.task_id}", task.tenant_id, task.task_id, start)
        await other.apply(f"other-{task.task_id}", task.tenant_id, task.task_id, _noted("summary", "by the other copy"))
        await ours.apply(f"ours-{task.task_id}", task.tenant_id, task.task_id, _noted("reason", "by ours"))
        state = await ours.get(task.tenant_id, task.task_id)
        assert (state.summary, state.reason) == ("by the other copy", "by ours")  # not written over the state it wrote itself

        # The other copy writes between our read and our write: ours writes nothing and applies its event again.
        write, raced = ours._write, []

        async def racing(*args: Any) -> Any:
            if not raced:
                raced.append(await other.apply(f"race-{task.task_id}", task.tenant_id, task.task_id, _noted("summary", "raced")))
            return await write(*args)

        ours._write = racing  # type: ignore[method-assign]
        await ours.apply(f"ours2-{task.task_id}", task.tenant_id, task.task_id, _noted("reason", "applied again"))
        state = await ours.get(task.tenant_id, task.task_id)
        assert (state.summary, state.reason) == ("raced", "applied again")
        applied = await pool.fetch("SELECT event_id FROM planner.processed_events WHERE task_id = $1", task.task_id)
        assert len(applied) == 5  # each event once (the start's is recorded too)
    finally:
        await pool.close()


@pytest.fixture
async def pool(infra: Any) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the planner's migrated schema."""
    pool = await create_pool(infra.database_url, max_size=2)
    try:
        await apply_migrations(pool, "planner", REPO_ROOT / "services" / "planner" / "migrations")
        yield pool
    finally:
        await pool.close()


async def test_the_stored_state_and_steps_are_those_the_domain_returned_at_each_event(pool: asyncpg.Pool) -> None:
    """The state is written with the parts an event left alone serialised once; what is read back is the state, whole, every time."""
    repo = PostgresTaskRepository(pool, RATES, seal=SEAL)
    task = ticket_task(TICKETS[2], task_id=f"repo-{uuid.uuid4().hex[:8]}")  # a refund to a new payee: denied, re-planned
    plan = await PlaybookStrategy(ToolCatalog.load(REPO_ROOT / "catalog" / "tools")).plan(task)
    returned: list[TaskState] = []

    def kept(step: Callable[[TaskState | None], Transition | None]) -> Change:
        def change(state: TaskState | None) -> Transition | None:
            transition = step(state)
            if transition is not None:
                returned.append(transition.state)
            return transition

        return change

    start = lambda s: domain.start_task(task, plan.steps, strategy="playbook", now=utcnow(), rates=RATES, read_only=frozenset())  # noqa: E731
    [proposed] = await repo.apply(f"ev-{task.task_id}", task.tenant_id, task.task_id, kept(start))
    for n in range(12):
        p = proposed.event.data
        outcome = "deny" if p.tool == "issue_refund" else "allow"
        decided = ActionDecidedData(
            **action_identity(p),
            tool=p.tool,
            args=p.args,
            action_digest="d",
            outcome=outcome,
            reasons=[Reason(code="new_payee_blocked", policy_id="k", message="new payee")],
            policy_version="v",
            latency_ms=1,
        )
        decide = lambda s, d=decided: domain.on_decision(s, d, utcnow(), RATES, frozenset())  # noqa: E731
        pending = await repo.apply(f"d{n}-{task.task_id}", task.tenant_id, task.task_id, kept(decide))
        assert await repo.get(task.tenant_id, task.task_id) == returned[-1]
        if outcome == "allow":
            result = ActionResultData(
                **action_identity(p),
                tool=p.tool,
                status="succeeded",
                result={"ok": True, "n": n},
                attempts=2,
                duration_ms=1.0,
                cost=ResultCost(usd=0.25 * n),
            )
            run = lambda s, r=result: domain.on_result(s, r, utcnow(), RATES, frozenset())  # noqa: E731
            pending = await repo.apply(f"r{n}-{task.task_id}", task.tenant_id, task.task_id, kept(run))
        state = await repo.get(task.tenant_id, task.task_id)
        assert state == returned[-1]
        rows = await pool.fetch(
            "SELECT s.*, t.counts FROM planner.steps s JOIN planner.tasks t USING (tenant_id, task_id) WHERE task_id = $1 ORDER BY step",
            task.task_id,
        )
        columns = ("step", "action_id", "tool", "args", "tainted_args", "status", "decision", "reasons", "approval_id", "attempts")
        assert [{c: r[c] if c not in ("args", "tainted_args", "reasons") else json.loads(r[c]) for c in columns} for r in rows] == [
            s.model_dump(include=set(columns)) for s in state.steps
        ]
        assert [r["cost_usd"] for r in rows] == [s.cost_usd for s in state.steps]
        assert all(ActionCounts.model_validate_json(r["counts"]) == state.counts for r in rows)
        if pending[0].topic == "tasks.outcomes":
            break
        [proposed] = pending
    assert state.status == "completed"
    assert [s.status for s in state.steps].count("denied") == 1
    assert len(state.steps) >= 4


async def test_the_ids_of_events_applied_before_a_cutoff_are_forgotten_and_a_late_redelivery_changes_nothing(infra):
    """`planner.processed_events` no longer grows by a row per event forever (`PlannerSettings.applied_events_kept_s`)."""
    pool = await create_pool(infra.database_url, max_size=2)
    try:
        await apply_migrations(pool, "planner", REPO_ROOT / "services" / "planner" / "migrations")
        repo = PostgresTaskRepository(pool, RATES, seal=SEAL)
        run = uuid.uuid4().hex[:8]
        started = [_started(f"forget-{run}-{n}") for n in range(3)]
        for n, (task, start) in enumerate(started):
            [proposal] = await repo.apply(f"{run}-ev-{n}", task.tenant_id, task.task_id, start)
            await repo.published([proposal.outbox_id])
        # the first two were applied long ago (before any other row of this database), the third now
        for n in (0, 1):
            await pool.execute(f"UPDATE planner.processed_events SET seen_at = '1990-01-0{n + 1}' WHERE event_id = $1", f"{run}-ev-{n}")

        assert await forget_applied(repo, datetime(1991, 1, 1, tzinfo=UTC), batch=1) == 2  # one statement a batch, until done

        kept = await pool.fetch("SELECT event_id FROM planner.processed_events WHERE event_id LIKE $1 ORDER BY event_id", f"{run}-%")
        assert [r["event_id"] for r in kept] == [f"{run}-ev-2"]
        # delivered again after its id was forgotten: its task exists, so (as the domain does) nothing is proposed or written
        task, start = started[0]
        before = await pool.fetchval("SELECT xmin::text FROM planner.tasks WHERE task_id = $1", task.task_id)
        again = await repo.apply(f"{run}-ev-0", task.tenant_id, task.task_id, lambda state: None if state is not None else start(state))
        assert again == []
        assert await pool.fetchval("SELECT xmin::text FROM planner.tasks WHERE task_id = $1", task.task_id) == before
    finally:
        await pool.close()


async def test_the_running_planner_forgets_on_its_timer_as_its_own_login(infra, kit):
    """The sweep runs in the service as `tidegate_planner`, which may delete its applied ids, and keeps the recent ones."""
    run = uuid.uuid4().hex[:8]
    owner = await asyncpg.connect(infra.database_url)
    try:
        await owner.execute(
            "INSERT INTO planner.processed_events (event_id, task_id, seen_at) "
            "VALUES ($1, 't', now() - interval '2 hours'), ($2, 't', now())",
            f"{run}-old",
            f"{run}-new",
        )
        planner = build(kit, PlannerSettings(applied_events_kept_s=3600, applied_events_check_s=0.2))
        await planner.start()
        try:
            for _ in range(100):
                left = await owner.fetch("SELECT event_id FROM planner.processed_events WHERE event_id LIKE $1", f"{run}-%")
                if len(left) < 2:
                    break
                await asyncio.sleep(0.1)
        finally:
            await planner.stop()
        assert [r["event_id"] for r in left] == [f"{run}-new"]
    finally:
        await owner.close()


async def test_a_stored_state_leaves_out_what_is_at_its_default_and_reads_back_whole(pool: asyncpg.Pool) -> None:
    """Each event rewrites the task's state (and PostgreSQL its TOAST): a field at its default is not written, nor read amiss.

    A state written before, whole, still reads: nothing to migrate.
    """
    repo = PostgresTaskRepository(pool, RATES, seal=SEAL)
    task, start = _started(f"repo-{uuid.uuid4().hex[:8]}")
    await repo.apply(f"ev-{task.task_id}", task.tenant_id, task.task_id, start)
    await repo.apply(f"ev2-{task.task_id}", task.tenant_id, task.task_id, _noted("summary", "noted"))
    state = await repo.get(task.tenant_id, task.task_id)
    stored = await pool.fetchval(
        "SELECT state::text FROM planner.tasks WHERE tenant_id = $1 AND task_id = $2", task.tenant_id, task.task_id
    )
    assert json.loads(stored) == {"plan": [], "steps": []} | json.loads(state.model_dump_json(exclude_defaults=True))  # both always there
    assert len(stored) < 0.85 * len(state.model_dump_json())
    for default in ('"approval_id":null', '"on_deny":[]', '"dropped":[]', '"proposals":1', '"required":true'):
        assert default not in stored
    assert await PostgresTaskRepository(pool, RATES, seal=SEAL).get(task.tenant_id, task.task_id) == state  # read by another copy

    steps = await pool.fetch("SELECT * FROM planner.steps WHERE tenant_id = $1 AND task_id = $2", task.tenant_id, task.task_id)
    [step] = state.steps
    assert [(r["status"], json.loads(r["tainted_args"]), json.loads(r["reasons"]), r["attempts"], r["cost_usd"]) for r in steps] == [
        (step.status, step.tainted_args, step.reasons, step.attempts, step.cost_usd)
    ]

    before = state.model_copy(update={"summary": "written whole, before"}).model_dump_json()  # as the planner wrote it before
    proof = SEAL.sign(task.tenant_id, task.task_id, "", before)
    await pool.execute(
        "UPDATE planner.tasks SET state = $3, state_key_id = $4, state_signature = $5 WHERE tenant_id = $1 AND task_id = $2",
        task.tenant_id,
        task.task_id,
        before,
        proof.key_id,
        proof.signature,
    )
    assert (await PostgresTaskRepository(pool, RATES, seal=SEAL).get(task.tenant_id, task.task_id)).summary == "written whole, before"


async def test_an_event_of_a_task_this_process_holds_updates_its_rows_without_locking_them_first(infra: Any, pool: asyncpg.Pool) -> None:
    """An upsert of a row that exists probes the key, locks the row (a WAL record of its own) and then updates it.

    The next event of a task this process wrote last updates the task and the step it changes: no row lock is written to
    the WAL for either but the one an update writes itself when the row moves to another page (counted with
    `pg_walinspect`, as a superuser). A step it adds is inserted (the steps' foreign key then locks the task's row, as
    before), and the steps' rows are those of the state.
    """
    repo = PostgresTaskRepository(pool, RATES, seal=SEAL)
    task, start = _started(f"repo-{uuid.uuid4().hex[:8]}")
    await repo.apply(f"ev-{task.task_id}", task.tenant_id, task.task_id, start)

    def answered(state: TaskState | None) -> Transition | None:
        assert state is not None
        return Transition(state=state.model_copy(update={"steps": [state.steps[0].model_copy(update={"status": "allowed"})]}))

    def added(state: TaskState | None) -> Transition | None:
        assert state is not None
        step = state.steps[0].model_copy(update={"step": 2, "action_id": f"{state.steps[0].action_id}-2", "status": "proposed"})
        return Transition(state=state.model_copy(update={"steps": [*state.steps, step]}))

    admin = await asyncpg.connect(infra.admin_database_url)
    try:
        await admin.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        start_lsn = await admin.fetchval("SELECT pg_current_wal_lsn()")
        await repo.apply(f"ev2-{task.task_id}", task.tenant_id, task.task_id, answered)
        end_lsn = await admin.fetchval("SELECT pg_current_wal_lsn()")
        nodes = {
            r["node"]: r["relname"]
            for r in await admin.fetch(
                "SELECT relfilenode::text AS node, relname FROM pg_class WHERE oid = ANY($1::regclass[])",
                ["planner.tasks", "planner.steps"],
            )
        }
        records = await admin.fetch("SELECT record_type, block_ref FROM pg_get_wal_records_info($1, $2)", start_lsn, end_lsn)
    finally:
        await admin.close()
    written = [
        (nodes[m[1]], r["record_type"]) for r in records if (m := re.search(r"rel \d+/\d+/(\d+)", r["block_ref"] or "")) and m[1] in nodes
    ]
    for relation in ("tasks", "steps"):
        kinds = [kind for r, kind in written if r == relation]
        moved = sum(kind.startswith("UPDATE") for kind in kinds)  # a version that did not fit its page (UPDATE, UPDATE+INIT)
        assert moved + kinds.count("HOT_UPDATE") == 1, written
        # PostgreSQL locks the old version of a row it moves to another page while it finds room: that lock, no other.
        assert kinds.count("LOCK") == moved, written

    await repo.apply(f"ev3-{task.task_id}", task.tenant_id, task.task_id, added)
    state = await repo.get(task.tenant_id, task.task_id)
    rows = await pool.fetch(
        "SELECT step, status FROM planner.steps WHERE tenant_id = $1 AND task_id = $2 ORDER BY step", task.tenant_id, task.task_id
    )
    assert [(r["step"], r["status"]) for r in rows] == [(s.step, s.status) for s in state.steps] == [(1, "allowed"), (2, "proposed")]
