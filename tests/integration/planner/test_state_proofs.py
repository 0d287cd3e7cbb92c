"""The planner's stored task states are proven: a state it did not write is never applied to, and the task ends told.

Real PostgreSQL, the planner's own login as the attacker (`services/planner/state_seal.py`). The whole-service attack
(a rewritten draft task after a human's grant) is `tests/security/test_planner_login_state.py`.
"""

from __future__ import annotations

import json
import logging
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from schemas import ActionDecidedData, Reason, action_identity, utcnow
from servicekit import KitSettings, SigningKey, create_pool
from servicekit.dbroles import service_database_url
from services.planner import domain
from services.planner.action_ids import ActionIds
from services.planner.repository import PostgresTaskRepository
from services.planner.state_seal import StateSeal
from services.planner.task_state import CostRates, PlannedStep
from systems.seed import TICKETS
from tidegate.demo.tickets import ticket_task

RATES = CostRates()
IDS = ActionIds(b"state-proofs-test".ljust(32, b"."))

with tempfile.TemporaryDirectory() as _keys:  # the planner's key: its current key is known without the folder
    SEAL = StateSeal(SigningKey.load_or_create(Path(_keys), "planner"), Path(_keys))


def _refused(reason: str) -> float:
    return REGISTRY.get_sample_value("tidegate_rows_refused_total", {"service": "planner", "table": "tasks", "reason": reason}) or 0.0


@pytest.fixture
async def login(kit: KitSettings) -> AsyncIterator[asyncpg.Pool]:
    """The planner's own database login (its schema is migrated by the session): the service's, and the attacker's."""
    pool = await create_pool(service_database_url(kit, "planner"), max_size=2)
    yield pool
    await pool.close()


async def _started(repo: PostgresTaskRepository) -> tuple[Any, Any]:
    """A task of two steps, its first proposed: (the task, that proposal)."""
    task = ticket_task(TICKETS[6], task_id=f"proof-{uuid.uuid4().hex[:8]}")
    steps = [PlannedStep(tool="get_ticket", args={"ticket_id": "T-1"}), PlannedStep(tool="add_internal_note", args={"note": "n"})]

    def start(state: Any) -> Any:
        return domain.start_task(task, steps, strategy="playbook", now=utcnow(), rates=RATES, read_only=frozenset(), ids=IDS)

    [proposed] = await repo.apply(f"ev-{task.task_id}", task.tenant_id, task.task_id, start)
    return task, proposed.event.data


def _allowed(p: Any) -> ActionDecidedData:
    return ActionDecidedData(
        **action_identity(p),
        tool=p.tool,
        args=p.args,
        action_digest="d",
        outcome="allow",
        reasons=[Reason(code="read_allowed", policy_id="t", message="ok")],
        policy_version="t",
        latency_ms=1.0,
    )


def _decide(repo: PostgresTaskRepository, p: Any) -> Any:
    """Apply the policy's decision on `p`, as the handlers do (the task ends if its state is refused and `p` is ours)."""
    now = utcnow()

    def ending(why: str) -> Any:
        return domain.on_state_refused(p.task_id, p.tenant_id, why, now, RATES) if IDS.owns(p.action_id, p.tenant_id, p.task_id) else None

    change = lambda s: s and domain.on_decision(s, _allowed(p), now, RATES, frozenset(), ids=IDS)  # noqa: E731
    return repo.apply(f"dec-{p.action_id}-{uuid.uuid4().hex[:4]}", p.tenant_id, p.task_id, change, ending=ending)


async def test_a_genuine_state_is_read_back_by_a_restarted_copy(login: asyncpg.Pool) -> None:
    task, p = await _started(PostgresTaskRepository(login, RATES, seal=SEAL))
    fresh = PostgresTaskRepository(login, RATES, seal=SEAL)  # a cache miss: the state is read and its proof checked
    before = _refused("invalid") + _refused("unsigned")
    assert (await fresh.get(task.tenant_id, task.task_id)).plan[0].tool == "add_internal_note"
    assert await _decide(fresh, p) == []  # applied: allowed, waiting for its result
    assert (await fresh.get(task.tenant_id, task.task_id)).current.status == "allowed"
    assert _refused("invalid") + _refused("unsigned") == before


@pytest.mark.parametrize("forgery", ["altered", "unsigned", "copied"])
async def test_a_state_the_login_wrote_is_refused_counted_and_the_task_ended(
    login: asyncpg.Pool, forgery: str, caplog: pytest.LogCaptureFixture
) -> None:
    repo = PostgresTaskRepository(login, RATES, seal=SEAL)
    task, p = await _started(repo)
    if forgery == "altered":  # the planted step of the review's probe
        state = json.loads(await login.fetchval("SELECT state FROM planner.tasks WHERE task_id = $1", task.task_id))
        state["mode"], state["plan"][0]["args"] = "autonomous", {"note": "PLANTED"}
        await login.execute("UPDATE planner.tasks SET state = $2::json WHERE task_id = $1", task.task_id, json.dumps(state))
    elif forgery == "unsigned":  # as a row written before migration 007 is
        await login.execute("UPDATE planner.tasks SET state_key_id = NULL, state_signature = NULL WHERE task_id = $1", task.task_id)
    else:  # another task's genuine state and proof, copied over this one's
        other, _ = await _started(repo)
        await login.execute(
            "UPDATE planner.tasks t SET state = o.state, state_key_id = o.state_key_id, state_signature = o.state_signature "
            "FROM planner.tasks o WHERE t.task_id = $1 AND o.task_id = $2",
            task.task_id,
            other.task_id,
        )
    reason = "unsigned" if forgery == "unsigned" else "invalid"
    before = _refused(reason)
    with caplog.at_level(logging.WARNING, logger="servicekit.row_proofs"):
        assert await PostgresTaskRepository(login, RATES, seal=SEAL).get(task.tenant_id, task.task_id) is None  # the sweep's read: refused
        [ended] = await _decide(repo, p)  # the same process: the row is no longer the version it wrote
    assert _refused(reason) == before + 2
    assert f"planner: the stored state of task {task.task_id} of tenant {task.tenant_id} refused" in caplog.text
    assert (ended.topic, ended.event.data.status, ended.event.data.reason) == ("tasks.outcomes", "failed", "state_refused")
    assert (ended.event.data.task_id, ended.event.data.tenant_id) == (task.task_id, task.tenant_id)
    # The planner's own closed state, proven.
    closed = await PostgresTaskRepository(login, RATES, seal=SEAL).get(task.tenant_id, task.task_id)
    assert (closed.status, closed.plan, closed.steps) == ("failed", [], [])


async def test_an_event_of_an_action_the_planner_did_not_propose_leaves_a_refused_state(login: asyncpg.Pool) -> None:
    """An outside agent's (or an undo's) action proves nothing of the task: refused and counted, but not ended in its name."""
    repo = PostgresTaskRepository(login, RATES, seal=SEAL)
    task, p = await _started(repo)
    await login.execute("UPDATE planner.tasks SET state_signature = NULL WHERE task_id = $1", task.task_id)
    before = _refused("unsigned")
    assert await _decide(repo, p.model_copy(update={"action_id": f"{task.task_id}:1.outside"})) == []
    assert _refused("unsigned") == before + 1
    assert await login.fetchval("SELECT status FROM planner.tasks WHERE task_id = $1", task.task_id) == "running"
