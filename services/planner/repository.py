"""Where task state lives: a Protocol, its asyncpg implementation (schema `planner`) and an in-memory twin.

`apply` is the one unit of work: it skips an event already applied, runs the pure transition on the
task's state, and in one statement saves state and steps and stores the events to publish in an
outbox, unless the task changed since it was read (then it starts again). The outbox keeps each event
as it goes out (`servicekit.Outlet.record`: signed, with its trace context, encoded once). The caller
publishes those bytes and then calls `published`; an event redelivered before that hands back the same
stored bytes, so a crash re-publishes identical records (same id, same signature) and never new ones.

A task is its tenant's: every table, read and write keys it by (tenant, task id), as the policy and the approval
service do, so two tenants' tasks of one id (a ticket number) never meet.

Each state is written with the planner's signature over its exact text (`StateSeal`, one per write) and checked when
read from a row version this process did not write itself: a state that fails is refused, never applied to (nothing is
proposed from it), and the task is ended by the caller's `ending`, when the event applied proves the task its own.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
from pydantic import BaseModel

from schemas import Envelope, decode
from servicekit import UNFLUSHED, Recorded
from servicekit.db import delete_in_batches
from servicekit.outlet import record_event
from services.planner.state_seal import StateSeal
from services.planner.task_state import CostRates, StepRecord, TaskState, Transition

__all__ = [
    "Change",
    "Ending",
    "InMemoryTaskRepository",
    "PendingEvent",
    "PostgresTaskRepository",
    "Seal",
    "TaskKey",
    "TaskRepository",
    "forget_applied",
    "unsigned",
]

TaskKey = tuple[str, str]
"""A task as the planner keys it: (tenant id, task id)."""

Change = Callable[[TaskState | None], Transition | None]
"""Given the task's state (None when unknown), the transition to apply, or None to leave it alone."""

Ending = Callable[[str], Transition | None]
"""Given why the task's stored state was refused, the transition that ends the task (from what the signed event being
applied proves of it), or None to leave it as it is (the event proves nothing of the task: the step-timeout sweep, an
action the planner did not propose)."""

Seal = Callable[[str, Envelope], Recorded]
"""Makes an event's bytes as they go out on a topic (`servicekit.Outlet.record`), before they are stored."""


def unsigned(topic: str, event: Envelope) -> Recorded:
    """An event's bytes unsigned: for tests of the repository alone (the planner's handlers seal with the service's key)."""
    return record_event(topic, event, None)


@dataclass(frozen=True)
class PendingEvent:
    """An outbox entry: publish its bytes as they are, then mark it published."""

    outbox_id: int
    record: Recorded

    @property
    def topic(self) -> str:
        """The catalog topic it goes to."""
        return self.record.topic

    @property
    def event(self) -> Any:
        """The event, as its consumers decode it."""
        return self.record.event if self.record.event is not None else decode(self.record.topic, self.record.value)


class TaskRepository(Protocol):
    """Task state with exactly-once application of events."""

    async def apply(
        self, event_id: str, tenant_id: str, task_id: str, change: Change, seal: Seal = unsigned, *, ending: Ending | None = None
    ) -> list[PendingEvent]:
        """Apply `change` to the tenant's task once per `event_id`, keeping its events as `seal` makes them; return what must be published.

        A stored state that fails its proof is never given to `change`: it is refused, and `ending` decides what the
        event does instead (nothing when it is None).
        """
        ...

    async def published(self, outbox_ids: list[int]) -> None:
        """Forget outbox entries that reached the broker."""
        ...

    async def get(self, tenant_id: str, task_id: str) -> TaskState | None:
        """The tenant's task's state, if the planner runs it (None also when its stored state is refused: logged and counted)."""
        ...

    async def waiting_since_before(self, cutoff: datetime, *, limit: int = 1000) -> list[TaskKey]:
        """Open tasks whose current step has waited for a machine's answer since before `cutoff` (oldest first)."""
        ...

    async def unpublished(self, source_prefix: str) -> list[PendingEvent]:
        """Outbox entries of events whose ids start with `source_prefix` (no redelivery will hand them back)."""
        ...

    async def forget_applied_before(self, cutoff: datetime, *, limit: int = 10_000) -> int:
        """Forget up to `limit` ids of events applied before `cutoff`, which no bus keeps any more; how many were forgotten."""
        ...


async def forget_applied(repo: TaskRepository, cutoff: datetime, *, batch: int = 10_000) -> int:
    """Forget every id of an event applied before `cutoff`, `batch` at a time (no statement holds the table long); how many."""
    return await delete_in_batches(lambda limit: repo.forget_applied_before(cutoff, limit=limit), batch)


# The task's version (`xmin`), its state unless the caller holds that version already ($3), the state's proof, and whether
# the event was applied.
_READ = (
    "SELECT xmin::text AS version, CASE WHEN xmin::text = $3 THEN NULL ELSE state END AS state, state_key_id AS key_id, "
    "state_signature AS signature, EXISTS (SELECT 1 FROM planner.processed_events WHERE event_id = $2) AS seen "
    "FROM planner.tasks WHERE tenant_id = $4 AND task_id = $1"
)
_GET = (
    "SELECT xmin::text AS version, state, state_key_id AS key_id, state_signature AS signature FROM planner.tasks "
    "WHERE tenant_id = $2 AND task_id = $1"
)

# Data-modifying CTEs all run, once, in one statement (PostgreSQL checks the steps' foreign key at its end): the task is
# written only if the event is not applied yet, and everything else only if it was. The state is stored as `json`, checked
# but never parsed into a tree; its counts and the steps it adds or changes (each as the state holds it: without the
# fields at their default, which the step's columns take back from `StepRecord`'s defaults) come as parameters of their
# own, with the state's proof (`StateSeal`). Fragments shared by the two statements, their parameters named.
_APPLIED = "p AS (INSERT INTO planner.processed_events (event_id, tenant_id, task_id) SELECT {event}, {tenant}, {task} FROM t)"
_STEP = (
    "x.step, x.action_id, x.tool, x.args, coalesce(x.tainted_args, '[]'), coalesce(x.status, 'proposed'), x.decision, "
    "coalesce(x.reasons, '[]'), x.approval_id, coalesce(x.attempts, 0), coalesce(x.cost_usd, 0)"
)
_STEP_RECORD = (
    "step int, action_id text, tool text, args jsonb, tainted_args jsonb, status text, decision text, reasons jsonb, "
    "approval_id text, attempts int, cost_usd float8"
)
_STEPS_ADDED = f"""s AS (INSERT INTO planner.steps
                 (tenant_id, task_id, step, action_id, tool, args, tainted_args, status, decision, reasons, approval_id, attempts,
                  cost_usd)
               SELECT {{tenant}}, {{task}}, {_STEP} FROM jsonb_to_recordset({{steps}}::jsonb) AS x({_STEP_RECORD})
               WHERE EXISTS (SELECT 1 FROM t)
               ON CONFLICT (tenant_id, task_id, step) DO UPDATE SET status = EXCLUDED.status, decision = EXCLUDED.decision,
                 reasons = EXCLUDED.reasons, approval_id = EXCLUDED.approval_id, attempts = EXCLUDED.attempts,
                 cost_usd = EXCLUDED.cost_usd, updated_at = now())"""
_OUTBOX_AND_RESULT = """o AS (INSERT INTO planner.outbox (source_event_id, tenant_id, task_id, topic, payload)
               SELECT {event}, {tenant}, {task}, x.topic, x.payload
               FROM unnest({topics}::text[], {payloads}::text[]) WITH ORDINALITY AS x(topic, payload, n)
               WHERE EXISTS (SELECT 1 FROM t)
               ORDER BY x.n
               RETURNING id)
SELECT (SELECT version FROM t) AS version, coalesce((SELECT array_agg(id ORDER BY id) FROM o), '{{}}'::bigint[]) AS ids"""
_TAIL = f"{_APPLIED},\n     {_STEPS_ADDED},\n     {_OUTBOX_AND_RESULT}"

# A task this process does not hold (new, or its stored state refused): inserted, or updated only if its row is still
# version $14 (`xmin`); each of its steps inserted or updated.
_WRITE = """WITH t AS (INSERT INTO planner.tasks
                 (task_id, tenant_id, workflow, strategy, status, counts, cost, human_touches, reason, summary, state, topic_prefix,
                  state_key_id, state_signature)
               VALUES ($1, $2, $3, $4, $5, $17::jsonb, $6::jsonb, $7, $8, $15, $9::json, $13, $18, $19)
               ON CONFLICT (tenant_id, task_id) DO UPDATE SET status = EXCLUDED.status, counts = EXCLUDED.counts, cost = EXCLUDED.cost,
                 human_touches = EXCLUDED.human_touches, reason = EXCLUDED.reason, summary = EXCLUDED.summary,
                 state = EXCLUDED.state, state_key_id = EXCLUDED.state_key_id, state_signature = EXCLUDED.state_signature,
                 updated_at = now()
               WHERE planner.tasks.xmin::text = $14 AND NOT EXISTS (SELECT 1 FROM planner.processed_events WHERE event_id = $10)
               RETURNING xmin::text AS version),
     """ + _TAIL.format(task="$1", tenant="$2", event="$10", steps="$11", topics="$12", payloads="$16")

# The next event of a task this process holds at version $13: an update of its row, no insert tried first (an upsert
# probes the key, locks the row it finds, a WAL record of its own, then updates it); its new steps ($11) inserted, the
# steps it changed ($17) updated, since the steps of the version it holds are all stored (written with it).
_ADVANCE = (
    """WITH t AS (UPDATE planner.tasks SET status = $3, counts = $9::jsonb, cost = $4::jsonb, human_touches = $5, reason = $6,
                 summary = $7, state = $8::json, state_key_id = $14, state_signature = $15, updated_at = now()
               WHERE tenant_id = $2 AND task_id = $1 AND xmin::text = $13
                 AND NOT EXISTS (SELECT 1 FROM planner.processed_events WHERE event_id = $10)
               RETURNING xmin::text AS version),
     u AS (UPDATE planner.steps SET status = coalesce(x.status, 'proposed'), decision = x.decision,
                 reasons = coalesce(x.reasons, '[]'), approval_id = x.approval_id, attempts = coalesce(x.attempts, 0),
                 cost_usd = coalesce(x.cost_usd, 0), updated_at = now()
               FROM jsonb_to_recordset($17::jsonb) AS x("""
    + _STEP_RECORD
    + """)
               WHERE planner.steps.tenant_id = $2 AND planner.steps.task_id = $1 AND planner.steps.step = x.step
                 AND EXISTS (SELECT 1 FROM t)),
     """
    + _TAIL.format(task="$1", tenant="$2", event="$10", steps="$11", topics="$12", payloads="$16")
)

Parts = dict[int, tuple[BaseModel, str]]
"""The JSON of a state's plan entries and steps by the identity of each, each kept beside its JSON (frozen: same object, same JSON)."""


@dataclass(frozen=True)
class _Kept:
    """A task's state as this process last wrote or read it: its row's version, and the JSON of its parts if it wrote it."""

    version: str
    state: TaskState
    parts: Parts


def _part_json(part: BaseModel, known: Parts, parts: Parts) -> str:
    kept = known.get(id(part))
    if kept is not None and kept[0] is part:
        text = kept[1]
    elif isinstance(part, StepRecord):  # a new or changed step: the call it proposes was a plan entry, or the step's before
        text = f'{part.model_dump_json(exclude=_PLANNED, exclude_defaults=True)[:-1]},"planned":{_part_json(part.planned, known, parts)}}}'
    else:
        text = part.model_dump_json(exclude_defaults=True)
    parts[id(part)] = (part, text)
    return text


_SPLICED = {"plan", "steps"}
_PLANNED = {"planned"}


def _state_json(state: TaskState, known: Parts) -> tuple[str, Parts]:
    """`state.model_dump_json(exclude_defaults=True)`, without serialising again the parts `known` from the version before.

    Most events change one step of a task and leave the rest of its steps and its plan as they
    were (the same objects): only the rest of the state and what changed are serialised. A field at
    its default is left out (a third of a demo task's text: nulls, empty lists, zero counts, a plan
    entry's flags), since the whole state is written again at each event; reading fills it back in,
    and a state written whole before reads the same.
    """
    parts: Parts = {}
    head = state.model_dump_json(exclude=_SPLICED, exclude_defaults=True)
    plan = ",".join([_part_json(p, known, parts) for p in state.plan])
    steps = ",".join([_part_json(s, known, parts) for s in state.steps])
    return f'{head[:-1]},"plan":[{plan}],"steps":[{steps}]}}', parts  # both always there, empty or not: psql readers rely on them


@dataclass
class PostgresTaskRepository(TaskRepository):
    """`TaskRepository` on the planner's own schema; `seal` signs each state written and checks each one read."""

    pool: asyncpg.Pool
    rates: CostRates
    seal: StateSeal = field(kw_only=True)
    prefix: str = ""  # the deployment's topic prefix, kept on each task it runs
    cached_tasks: int = 1024  # states of the tasks last written, each with its version (`PlannerSettings.cached_tasks`)
    _states: OrderedDict[TaskKey, _Kept] = field(default_factory=OrderedDict, init=False, repr=False)

    async def apply(
        self, event_id: str, tenant_id: str, task_id: str, change: Change, seal: Seal = unsigned, *, ending: Ending | None = None
    ) -> list[PendingEvent]:
        """One round trip when this process wrote the task last or the task is new, two otherwise; no explicit transaction, no lock.

        The write is one statement, so atomic, and it applies only if the task's row is still the
        version the state came from (its `xmin`: the transaction that last wrote it) and the event
        is not applied yet. The state this process wrote last is kept with its version, and an event
        that changes it, or starts a task this process does not hold, is written at once; when the
        guard refuses (another copy's step-timeout sweep, a redelivery, a task that exists already)
        or the event changes nothing, the task is read and the event applied to the fresh state, or
        its stored outbox handed back if it was applied already. A state read is checked (`StateSeal`) unless it is the
        version this process wrote or checked last: one that fails is refused, and the task ended by `ending`, if given.
        """
        key = (tenant_id, task_id)
        async with self.pool.acquire() as conn:
            kept = self._states.get(key)
            try:
                transition = change(kept.state if kept else None)
            except Exception:  # the kept state may be stale (another copy moved the task): the fresh one below decides
                transition = None
            if transition is not None and (kept is None or transition.changed):
                written = await self._write(conn, event_id, kept.version if kept else None, kept, transition, seal)
                if written is not None:
                    return written
            while True:
                kept = self._states.get(key)
                row = await conn.fetchrow(_READ, task_id, event_id, kept.version if kept else None, tenant_id)
                if row is None:
                    kept = None
                else:
                    if row["seen"]:
                        return await self._pending(conn, event_id)
                    if kept is None or row["state"] is not None:  # else the row is still the version this process holds
                        proven = self._proven(key, row)
                        if isinstance(proven, str):  # refused: nothing is applied to it; the task ends if the event proves it ours
                            ended = ending(proven) if ending is not None else None
                            if ended is None:
                                return []
                            written = await self._write(conn, event_id, row["version"], None, ended, seal)
                            if written is not None:
                                return written
                            continue
                        kept = proven
                    self._remember(key, kept)
                state = kept.state if kept else None
                transition = change(state)
                if transition is None or (state is not None and not transition.changed):
                    return []  # nothing to do (or not our task: remember nothing about it)
                written = await self._write(conn, event_id, kept.version if kept else None, kept, transition, seal)
                if written is not None:
                    return written

    def _proven(self, key: TaskKey, row: Any) -> _Kept | str:
        """The row's state if its proof holds, else why not (refused: logged once per version, counted, forgotten here)."""
        tenant_id, task_id = key
        unproven = self.seal.check(tenant_id, task_id, self.prefix, row["state"], row["key_id"], row["signature"])
        if unproven is None:
            return _Kept(row["version"], TaskState.model_validate_json(row["state"]), {})
        self.seal.refused(tenant_id, task_id, row["version"], unproven)
        self._states.pop(key, None)
        return unproven.why

    def _remember(self, key: TaskKey, kept: _Kept) -> None:
        """Keep the state last written, so that the next event of the task skips reading and parsing it."""
        self._states[key] = kept
        self._states.move_to_end(key)
        if len(self._states) > self.cached_tasks:
            self._states.popitem(last=False)

    async def _pending(self, conn: Any, event_id: str) -> list[PendingEvent]:
        rows = await conn.fetch("SELECT id, topic, payload FROM planner.outbox WHERE source_event_id = $1 ORDER BY id", event_id)
        return [PendingEvent(r["id"], Recorded.stored(r["topic"], r["payload"])) for r in rows]

    async def _write(
        self, conn: Any, event_id: str, version: str | None, old: _Kept | None, transition: Transition, seal: Seal
    ) -> list[PendingEvent] | None:
        """Save the task, its changed steps, the applied event and the outbox in one statement; None if its row is no longer `version`.

        `old`: the state the transition started from (its JSON is reused, its steps tell which changed), None for a new one.
        """
        new = transition.state
        records = [seal(o.topic, o.event) for o in transition.outbound]
        state_json, parts = _state_json(new, old.parts if old else {})
        proof = self.seal.sign(new.tenant_id, new.task_id, self.prefix, state_json)
        topics, payloads = [r.topic for r in records], [r.value.decode() for r in records]  # text arrays: no JSON around events
        counts, cost = new.counts.model_dump_json(), new.cost(self.rates).model_dump_json()
        if old is None:  # a new task, or one whose stored state was refused: every step written, inserted or updated
            steps = f"[{','.join(parts[id(s)][1] for s in new.steps)}]"
            row = await conn.fetchrow(
                _WRITE, new.task_id, new.tenant_id, new.workflow, new.strategy, new.status, cost, new.human_touches,
                new.reason, state_json, event_id, steps, topics, self.prefix, version, new.summary, payloads, counts,
                proof.key_id, proof.signature,
            )  # fmt: skip
        else:
            before = {s.step: s for s in old.state.steps}
            added = [parts[id(s)][1] for s in new.steps if s.step not in before]
            changed = [parts[id(s)][1] for s in new.steps if s.step in before and s is not before[s.step] and s != before[s.step]]
            row = await conn.fetchrow(
                _ADVANCE, new.task_id, new.tenant_id, new.status, cost, new.human_touches, new.reason, new.summary,
                state_json, counts, event_id, f"[{','.join(added)}]", topics, version, proof.key_id, proof.signature,
                payloads, f"[{','.join(changed)}]",
            )  # fmt: skip
        if row["version"] is None:
            return None
        self._remember((new.tenant_id, new.task_id), _Kept(row["version"], new, parts))
        return [PendingEvent(i, r) for i, r in zip(row["ids"], records, strict=True)]

    async def published(self, outbox_ids: list[int]) -> None:
        """Delete delivered outbox entries."""
        if outbox_ids:
            # Unflushed: an entry a crash brings back is published again when its source event is redelivered (the
            # same bytes, which consumers know by id), as it would be had the crash come before this delete.
            await self.pool.execute(f"DELETE FROM planner.outbox USING {UNFLUSHED} WHERE id = ANY($1::bigint[])", outbox_ids)

    async def forget_applied_before(self, cutoff: datetime, *, limit: int = 10_000) -> int:
        """See `TaskRepository`: found by the BRIN index on `seen_at` (ids are applied in time order), deleted by address.

        Deleted by `event_id IN (...)`, PostgreSQL hashed the batch and scanned the whole table for it (500,000 rows:
        106 ms a batch of 10,000, against 6 ms by the rows' addresses, whatever the table's size).
        """
        status = await self.pool.execute(
            "DELETE FROM planner.processed_events WHERE ctid = ANY(ARRAY("
            "SELECT ctid FROM planner.processed_events WHERE seen_at < $1 LIMIT $2))",
            cutoff,
            limit,
        )
        return int(status.rsplit(" ", 1)[-1])

    async def get(self, tenant_id: str, task_id: str) -> TaskState | None:
        """Load one task: the state this process holds if the row is still that version, else the stored one, checked."""
        row = await self.pool.fetchrow(_GET, task_id, tenant_id)
        if row is None:
            return None
        key = (tenant_id, task_id)
        kept = self._states.get(key)
        if kept is not None and kept.version == row["version"]:
            return kept.state
        proven = self._proven(key, row)
        return None if isinstance(proven, str) else proven.state

    async def waiting_since_before(self, cutoff: datetime, *, limit: int = 1000) -> list[TaskKey]:
        """See `TaskRepository`: this deployment's open tasks only (the partial index `tasks_open` keeps this small)."""
        rows = await self.pool.fetch(
            "SELECT tenant_id, task_id, (state->'steps'->-1->>'waiting_since')::timestamptz AS since FROM planner.tasks "
            "WHERE status IN ('running', 'waiting_human') AND topic_prefix = $3 "
            "AND (state->'steps'->-1->>'waiting_since')::timestamptz < $1 ORDER BY since LIMIT $2",
            cutoff,
            limit,
            self.prefix,
        )
        return [(r["tenant_id"], r["task_id"]) for r in rows]

    async def unpublished(self, source_prefix: str) -> list[PendingEvent]:
        """See `TaskRepository`."""
        rows = await self.pool.fetch(
            "SELECT id, topic, payload FROM planner.outbox WHERE starts_with(source_event_id, $1) ORDER BY id", source_prefix
        )
        return [PendingEvent(r["id"], Recorded.stored(r["topic"], r["payload"])) for r in rows]


@dataclass
class InMemoryTaskRepository(TaskRepository):
    """The in-memory twin, for unit tests."""

    tasks: dict[TaskKey, TaskState] = field(default_factory=dict)
    processed: dict[str, datetime] = field(default_factory=dict)  # applied event ids, when each was applied
    outbox: dict[int, tuple[str, Recorded]] = field(default_factory=dict)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _next: int = 0

    async def apply(
        self, event_id: str, tenant_id: str, task_id: str, change: Change, seal: Seal = unsigned, *, ending: Ending | None = None
    ) -> list[PendingEvent]:
        """Same contract as the PostgreSQL implementation (a state held in memory is never refused: `ending` is not needed)."""
        async with self._lock:
            if event_id in self.processed:
                return [PendingEvent(i, r) for i, (src, r) in sorted(self.outbox.items()) if src == event_id]
            state = self.tasks.get((tenant_id, task_id))
            transition = change(state)
            if transition is None or not transition.changed:
                return []  # not marked applied, as in PostgreSQL: the same event may change the task once its state has moved on
            self.processed[event_id] = self.clock()
            self.tasks[(tenant_id, task_id)] = transition.state
            pending = []
            for out in transition.outbound:
                self._next += 1
                record = seal(out.topic, out.event)
                self.outbox[self._next] = (event_id, record)
                pending.append(PendingEvent(self._next, record))
            return pending

    async def published(self, outbox_ids: list[int]) -> None:
        """Forget delivered entries."""
        for i in outbox_ids:
            self.outbox.pop(i, None)

    async def get(self, tenant_id: str, task_id: str) -> TaskState | None:
        """Load one task."""
        return self.tasks.get((tenant_id, task_id))

    async def waiting_since_before(self, cutoff: datetime, *, limit: int = 1000) -> list[TaskKey]:
        """See `TaskRepository`."""
        found = [
            (t.current.waiting_since, key)
            for key, t in self.tasks.items()
            if t.status in ("running", "waiting_human") and t.current is not None and t.current.waiting_since is not None
        ]
        return [key for since, key in sorted(found) if since < cutoff][:limit]

    async def unpublished(self, source_prefix: str) -> list[PendingEvent]:
        """See `TaskRepository`."""
        return [PendingEvent(i, r) for i, (src, r) in sorted(self.outbox.items()) if src.startswith(source_prefix)]

    async def forget_applied_before(self, cutoff: datetime, *, limit: int = 10_000) -> int:
        """See `TaskRepository`."""
        async with self._lock:
            old = [event_id for event_id, at in self.processed.items() if at < cutoff][:limit]
            for event_id in old:
                del self.processed[event_id]
            return len(old)
