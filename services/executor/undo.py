"""What undoing a succeeded call needs, kept in the executor's own schema (`executor.undo_plans`), and an in-memory twin.

The executor reads the prior state a catalog `undo.before` asks for right before the first attempt and
keeps it, so that an attempt after a crash still restores what was there first; when the call
succeeds it computes the plan (`servicekit.undo.plan_undo`), keeps it and puts it in the result.
Given the action's claim (`held`), the statements run on the connection that holds it: an action
takes one connection from the pool, whatever its undo needs.

The executor's own database login can write `executor.undo_plans`, and what is there becomes a call: a plan
is proposed as the undo, and a kept prior state is what the plan restores. So each part carries the executor's
signature over the row's action, tenant, task, tool and that part (`UndoSeals`, `servicekit.row_proofs`), and a
part read without a valid one is refused: logged, counted (`tidegate_rows_refused_total{service="executor",
table="undo_plans"}`) and never used, so the call's undo is `unavailable` rather than computed from a forged state.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from schemas import UndoPlan
from servicekit import UNFLUSHED, SigningKey
from servicekit.authority import Principal
from servicekit.row_proofs import KeyHolders, Proof, RowSeal
from services.executor.claims import ClaimSession, WithOutcome

__all__ = ["InMemoryUndoStore", "KeptLater", "PgUndoStore", "UndoKey", "UndoSeals", "UndoStore", "undo_seals"]

_REFUSED = (
    "its undo is unavailable (a person corrects the system of record by hand); the executor's database login may have been "
    "used to write it: rotate that login's password (docs/security/database.md)"
)


@dataclass(frozen=True)
class UndoKey:
    """The call an undo record belongs to."""

    action_id: str
    tenant_id: str
    task_id: str
    tool: str


def _the_executor(principal: Principal, claims: dict[str, Any]) -> bool:
    """Only the executor writes undo records; what a key of its signed before `tidegate keys rotate` stands."""
    return principal.kind == "service" and principal.name == "executor"


@dataclass(frozen=True)
class UndoSeals:
    """The seals of an undo record's two parts: the state kept before the call, and the plan kept after it."""

    before: RowSeal
    plan: RowSeal


def undo_seals(signer: SigningKey, holders: KeyHolders) -> UndoSeals:
    """The executor's seals: it signs with its own key, and trusts only the executor's keys among `holders`."""
    return UndoSeals(
        before=RowSeal("executor", "undo_plans", b"tidegate-undo-before\n", signer, holders, _the_executor),
        plan=RowSeal("executor", "undo_plans", b"tidegate-undo-plan\n", signer, holders, _the_executor),
    )


def _claims(action_id: str, tenant_id: str, task_id: str, tool: str, part: str, value: Any) -> dict[str, Any]:
    """What a part's signature covers: the call it belongs to, and the part itself (the state before, or the plan)."""
    return {"action_id": action_id, "tenant_id": tenant_id, "task_id": task_id, "tool": tool, part: value}


KeptLater = Callable[[], dict[str, Any] | None]
"""The state kept before a call, to be asked once the claim's `running` mark that keeps it has gone through (None before)."""


class UndoStore(Protocol):
    """Prior states and undo plans by action id."""

    async def prior_state(self, action_id: str, *, held: ClaimSession | None = None) -> dict[str, Any] | None:
        """The state kept before the call, if any (`held`: the action's claim, whose connection reads it)."""
        ...

    async def keep_prior_state(self, key: UndoKey, before: dict[str, Any], *, held: ClaimSession | None = None) -> dict[str, Any] | None:
        """Keep `before` unless a state is kept already; return the one kept (the first read wins), None when it is refused.

        Durable once the claim's next write is (`running`, before the call): the caller makes one.
        """
        ...

    async def keep_prior_state_running(self, key: UndoKey, before: dict[str, Any], *, held: ClaimSession) -> KeptLater:
        """Keep `before` as `keep_prior_state` does, written by the statement marking the claim's next attempt `running`.

        That mark (`ClaimSession.with_running`) is flushed before the call: one transaction with it, and one fewer.

        Returns how to ask for the state kept (the first read wins; None when refused) once that mark has gone through.
        """
        ...

    async def keep_plan(self, key: UndoKey, plan: UndoPlan, *, held: ClaimSession | None = None) -> None:
        """Keep the plan computed when the call succeeded.

        Given the claim (`held`), the plan is written with the outcome (`ClaimSession.finish`, before the result is
        published) in one statement: the caller makes that write.
        """
        ...

    async def plan(self, action_id: str) -> UndoPlan | None:
        """The plan kept for the call, if any (and proven)."""
        ...


@dataclass
class InMemoryUndoStore(UndoStore):
    """The in-memory twin of PgUndoStore, for tests and in-process tooling."""

    befores: dict[str, dict[str, Any]] = field(default_factory=dict)
    plans: dict[str, UndoPlan] = field(default_factory=dict)

    async def prior_state(self, action_id: str, *, held: ClaimSession | None = None) -> dict[str, Any] | None:
        """See UndoStore."""
        return self.befores.get(action_id)

    async def keep_prior_state(self, key: UndoKey, before: dict[str, Any], *, held: ClaimSession | None = None) -> dict[str, Any] | None:
        """See UndoStore."""
        return self.befores.setdefault(key.action_id, before)

    async def keep_prior_state_running(self, key: UndoKey, before: dict[str, Any], *, held: ClaimSession) -> KeptLater:
        """See UndoStore: kept at once."""
        kept = await self.keep_prior_state(key, before)
        return lambda: kept

    async def keep_plan(self, key: UndoKey, plan: UndoPlan, *, held: ClaimSession | None = None) -> None:
        """See UndoStore."""
        self.plans[key.action_id] = plan

    async def plan(self, action_id: str) -> UndoPlan | None:
        """See UndoStore."""
        return self.plans.get(action_id)


class PgUndoStore(UndoStore):
    """Undo records in `executor.undo_plans`, each part signed by the executor (`seals`) and checked when read."""

    def __init__(self, pool: asyncpg.Pool, seals: UndoSeals) -> None:
        self._pool = pool
        self._seals = seals

    def _on(self, held: ClaimSession | None) -> asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy:
        """The claim's connection when there is one, else the pool."""
        conn = held.connection if held is not None else None
        return self._pool if conn is None else conn

    def _proven(self, seal: RowSeal, part: str, row: asyncpg.Record | Mapping[str, Any]) -> Any:
        """The part of `row` (decoded) when its proof holds, else None: refused, logged and counted."""
        value = json.loads(row[part])
        claims = _claims(row["action_id"], row["tenant_id"], row["task_id"], row["tool"], part, value)
        why = seal.why_not(claims, row[f"{part}_key_id"], row[f"{part}_signature"])
        if why is None:
            return value
        kind = "state kept before" if part == "before" else "undo plan"
        what = f"the {kind} of action {row['action_id']} ({row['tool']}, tenant {row['tenant_id']})"
        seal.refused(what, why, _REFUSED)
        return None

    async def prior_state(self, action_id: str, *, held: ClaimSession | None = None) -> dict[str, Any] | None:
        """See UndoStore."""
        row = await self._on(held).fetchrow(
            "SELECT action_id, tenant_id, task_id, tool, before::text AS before, before_key_id, before_signature"
            " FROM executor.undo_plans WHERE action_id = $1 AND before IS NOT NULL",
            action_id,
        )
        before = None if row is None else self._proven(self._seals.before, "before", row)
        return None if before is None else dict(before)

    def _keep_before(self, key: UndoKey, before: dict[str, Any], source: str) -> WithOutcome:
        """The upsert that keeps `before` unless a state is kept already (the first read wins), selecting its row from `source`."""
        proof = self._seals.before.sign(_claims(key.action_id, key.tenant_id, key.task_id, key.tool, "before", before))
        first = "executor.undo_plans.before IS NULL"  # the first read wins: a state kept already, and its proof, stay
        sql = (
            f"INSERT INTO executor.undo_plans (action_id, tenant_id, task_id, tool, before, before_key_id, before_signature) {source}"
            " ON CONFLICT (action_id) DO UPDATE SET before = coalesce(executor.undo_plans.before, EXCLUDED.before),"
            f" before_key_id = CASE WHEN {first} THEN EXCLUDED.before_key_id ELSE executor.undo_plans.before_key_id END,"
            f" before_signature = CASE WHEN {first} THEN EXCLUDED.before_signature ELSE executor.undo_plans.before_signature END"
            " RETURNING action_id, tenant_id, task_id, tool, before::text AS before, before_key_id, before_signature"
        )
        return WithOutcome(sql, (key.action_id, key.tenant_id, key.task_id, key.tool, json.dumps(before), proof.key_id, proof.signature))

    def _kept(self, row: asyncpg.Record | Mapping[str, Any] | None) -> dict[str, Any] | None:
        kept = None if row is None else self._proven(self._seals.before, "before", row)
        return None if kept is None else dict(kept)

    async def keep_prior_state(self, key: UndoKey, before: dict[str, Any], *, held: ClaimSession | None = None) -> dict[str, Any] | None:
        """See UndoStore."""
        # committed unflushed: the claim's `running`, flushed, follows before the call
        keep = self._keep_before(key, before, f"SELECT $1, $2, $3, $4, $5::jsonb, $6, $7 FROM {UNFLUSHED}")
        row = await self._on(held).fetchrow(keep.sql, *keep.args)
        assert row is not None  # an upsert returns its row
        return self._kept(row)

    async def keep_prior_state_running(self, key: UndoKey, before: dict[str, Any], *, held: ClaimSession) -> KeptLater:
        """See UndoStore: on the claim's connection, a CTE of its next `running` mark (flushed, so no `UNFLUSHED` here)."""
        if held.connection is None:
            kept = await self.keep_prior_state(key, before, held=held)
            return lambda: kept
        returned = held.with_running(self._keep_before(key, before, "VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)"))
        return lambda: self._kept(returned.row) if returned.ran else None

    async def keep_plan(self, key: UndoKey, plan: UndoPlan, *, held: ClaimSession | None = None) -> None:
        """See UndoStore: with the claim's connection, the plan is written by the statement that records the outcome."""
        text = plan.model_dump_json(exclude_none=True)
        proof: Proof = self._seals.plan.sign(_claims(key.action_id, key.tenant_id, key.task_id, key.tool, "plan", json.loads(text)))
        sql = (
            "INSERT INTO executor.undo_plans (action_id, tenant_id, task_id, tool, plan, planned_at, plan_key_id, plan_signature)"
            " VALUES ($1, $2, $3, $4, $5::jsonb, now(), $6, $7)"
            " ON CONFLICT (action_id) DO UPDATE SET plan = EXCLUDED.plan, planned_at = now(),"
            " plan_key_id = EXCLUDED.plan_key_id, plan_signature = EXCLUDED.plan_signature"
        )
        args = (key.action_id, key.tenant_id, key.task_id, key.tool, text, proof.key_id, proof.signature)
        if held is not None and held.connection is not None:
            held.with_outcome(WithOutcome(sql, args))  # one transaction with the outcome, flushed before the result is published
            return
        await self._pool.execute(sql, *args)

    async def plan(self, action_id: str) -> UndoPlan | None:
        """See UndoStore."""
        row = await self._pool.fetchrow(
            "SELECT action_id, tenant_id, task_id, tool, plan::text AS plan, plan_key_id, plan_signature"
            " FROM executor.undo_plans WHERE action_id = $1 AND plan IS NOT NULL",
            action_id,
        )
        plan = None if row is None else self._proven(self._seals.plan, "plan", row)
        return None if plan is None else UndoPlan.model_validate(plan)
