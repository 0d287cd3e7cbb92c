"""The policy's database restored from a backup: found at start (it then refuses to start), and caught up from the bus.

A restored `policy` schema has lost the decisions taken since the backup, with their reservations, spend and payouts,
and the endings of the calls that ran since: started on it, the policy would let a tenant spend its budget again, let a
task pay out its cumulative threshold again, and decide a redelivered proposal afresh. The bus still holds every
decision the policy signed (`actions.decided`) and every result the executor signed (`actions.results`). So at start
the policy reads the decisions it signed on `actions.decided` since the newest decision its database holds, and the
results on `actions.results` its results consumer has handled since then, and refuses to start when a decision is not in
`policy.decisions` or a result's reservation is still held as if the call had not ended (`check_not_behind`).
`tidegate db catch-up` then writes each one back through the repository's own unit of work (`Restoration`): the
signed decision is recorded as it was taken (never decided again), and each result as `PolicyService.on_results` records it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from schemas import ActionDecidedData, ActionProposedData, ActionResult, ActionResultData, Approval, ApprovalResolved
from servicekit import Authority, ControlState, KitSettings, Recorded, ToolCatalog, service_key
from servicekit.bus_history import BehindTheBus, SignedEvent, handled_offsets, signed_since
from servicekit.catch_up_marks import unfinished_catch_up, unfinished_message
from services.policy._pg_repository import PgPolicyRepository
from services.policy.facts import History, payee_of
from services.policy.pack import PackSource, compile_pack
from services.policy.payees import PayeeSeal
from services.policy.repository import DecisionRecord, Pending, Reservation, granted_key
from services.policy.service import PolicyService
from services.policy.settings import PolicySettings

__all__ = ["RESULTS_GROUP", "Restoration", "Restored", "check_not_behind", "decision_key"]

DECIDED = "actions.decided"
RESULTS = "actions.results"
RESULTS_GROUP = "policy.results"  # the consumer group of `actions.results` (`servicekit.bus_rights` grants it)
FIX = 'run `tidegate db catch-up` (docs/operations.md, "Restoring the database"), then start it again'
Restored = Literal["recorded", "already"]


def decision_key(data: ActionDecidedData) -> str:
    """The key the policy records a decision under: its action id, or `approval:<id>` for a re-decision after a grant."""
    return granted_key(data.approval_id) if data.via == "approval" and data.approval_id else data.action_id


async def check_not_behind(
    pool: asyncpg.Pool, bootstrap: str, prefix: str, authority: Authority, *, client_options: dict[str, Any] | None = None
) -> None:
    """Raise BehindTheBus when the database lacks a decision the policy signed, or the ending of a result it handled, since its newest.

    Decisions: every one the policy signed on `actions.decided` since the newest decision the database holds (`signed_since`,
    not a tail of the topic: a redelivered proposal gets its recorded decision published again, and an agent re-proposing
    old calls can fill any tail with old decisions a backup holds: restore7 F2). Results: those on `actions.results` since
    then, before the offset its results consumer committed (after it: its backlog, handled once started), whose reservation
    is still held with no outcome, as if the call had not ended: started, the policy would release it as expired and forget
    what a paid call spent. Nothing on a topic since passes: there is nothing to compare.
    """
    if (began := await unfinished_catch_up(pool, "policy")) is not None:
        raise BehindTheBus(unfinished_message("the policy", began))
    newest = await pool.fetchval("SELECT max(decided_at) FROM policy.decisions")
    async with aclosing(signed_since(bootstrap, prefix, DECIDED, authority, newest, client_options=client_options)) as chunks:
        async for decided in chunks:
            held = await _held(pool, {decision_key(d.data(ActionDecidedData)) for d in decided})
            for signed in decided:
                data = signed.data(ActionDecidedData)
                if decision_key(data) not in held:
                    raise BehindTheBus(
                        f"the database is behind the bus: a decision the policy signed on {prefix}{DECIDED}[{signed.partition}] (offset "
                        f"{signed.offset}, {data.outcome} of action {data.action_id}, tenant {data.tenant_id}) is not in "
                        "policy.decisions: restored from a backup? Started, it could let a tenant spend its budget again and decide "
                        f"a decided call afresh; {FIX}"
                    )
    handled = await handled_offsets(bootstrap, prefix, RESULTS, prefix + RESULTS_GROUP, client_options=client_options)
    async with aclosing(signed_since(bootstrap, prefix, RESULTS, authority, newest, client_options=client_options)) as chunks:
        async for chunk in chunks:
            results = [r for r in chunk if r.offset < handled.get(r.partition, 0)]
            ids = sorted({r.data(ActionResultData).action_id for r in results})
            open_ = await pool.fetch(
                "SELECT action_id FROM policy.reservations WHERE action_id = ANY($1::text[]) AND status = 'reserved'"
                " AND outcome_unknown_at IS NULL",
                ids,
            )
            still_held = {r["action_id"] for r in open_}
            for signed in results:
                result = signed.data(ActionResultData)
                if result.action_id in still_held:
                    raise BehindTheBus(
                        f"the database is behind the bus: the policy handled the result on {prefix}{RESULTS}[{signed.partition}] "
                        f"(offset {signed.offset}, action {result.action_id}, {result.status}) but policy.reservations holds its "
                        f"budget as if the call had not ended: restored from a backup? Started, it could forget what the call spent; {FIX}"
                    )


async def _held(pool: asyncpg.Pool, keys: Iterable[str]) -> set[str]:
    """Of the decision keys `keys`, those `policy.decisions` holds."""
    return {r["key"] for r in await pool.fetch("SELECT key FROM policy.decisions WHERE key = ANY($1::text[])", sorted(keys))}


def _proposal_of(data: ActionDecidedData) -> ActionProposedData:
    """The call as the decision states it, when its proposal has left the bus.

    What the decision's facts state of its proposal is kept (its task budget, its confidence), so a later grant of the
    escalation is re-decided under the budget it was proposed with, never without one; what the proposal alone said
    (`tainted_args`, `undoes`) is not.
    """
    budget, confidence = _number(data.facts.get("task_budget_usd")), _number(data.facts.get("confidence"))
    return ActionProposedData(
        action_id=data.action_id,
        task_id=data.task_id,
        tenant_id=data.tenant_id,
        step=data.step,
        tool=data.tool,
        args=data.args,
        rationale=data.rationale,
        proposer=data.proposer or "unknown (its proposal has left the bus)",  # a decision of an older release names none
        mode=data.mode,
        requested_by=data.requested_by,
        budget_usd=budget if budget is not None and budget >= 0 else None,
        confidence=confidence if confidence is not None and 0 <= confidence <= 1 else None,
    )


def _number(value: Any) -> float | None:
    """A number a decision's facts state (a bool is not one), else None."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


async def _nowhere(records: Sequence[Recorded]) -> None:
    """A catch-up publishes nothing: the events are on the bus already."""
    return None


@dataclass(frozen=True)
class Restoration:
    """Writes what the bus says back into a restored `policy` schema, through the service's own repository and use cases."""

    service: PolicyService  # its repository records decisions; its `on_results` records results, as the running service does
    pool: asyncpg.Pool  # where to read what is lacking

    @classmethod
    def of(cls, kit: KitSettings, pool: asyncpg.Pool, settings: PolicySettings | None = None) -> Restoration:
        """The policy as its process is built (`app.build`), on `pool`, publishing nowhere: its key seals the payees it learns."""
        settings = settings or PolicySettings()
        catalog = ToolCatalog.load(*kit.tool_dirs)
        signer = service_key(kit, settings.signing_key_name)
        service = PolicyService(
            catalog=catalog,
            pack=compile_pack(PackSource.from_dir(kit.policy_dir), catalog),  # decides nothing here: a decision is recorded as signed
            repo=PgPolicyRepository(pool, PayeeSeal(signer, kit.keys_dir)),
            signer=signer,
            keys_dir=kit.keys_dir,
            control=ControlState(),
            publish_many=_nowhere,
            settings=settings,
        )
        return cls(service, pool)

    async def lacking(self, decided: list[SignedEvent]) -> list[SignedEvent]:
        """Of the signed decisions `decided`, in their order, one per key whose key `policy.decisions` does not hold."""
        first: dict[str, SignedEvent] = {}  # a decision published again (a redelivered proposal's) is the same one
        for d in decided:
            first.setdefault(decision_key(d.data(ActionDecidedData)), d)
        held = await _held(self.pool, first)
        return [d for k, d in first.items() if k not in held]

    async def unended(self, results: list[ActionResult]) -> list[ActionResult]:
        """Of `results` (one per action), those whose call's outcome the policy has not recorded, its task's state not forgotten."""
        rows = await self.pool.fetch(
            "SELECT w.a FROM unnest($1::text[], $2::text[], $3::text[]) AS w(a, t, k)"
            " WHERE NOT EXISTS (SELECT 1 FROM policy.call_outcomes o WHERE o.action_id = w.a)"
            " AND NOT EXISTS (SELECT 1 FROM policy.tasks_forgotten f WHERE f.tenant_id = w.t AND f.task_id = w.k)",
            [r.data.action_id for r in results],
            [r.data.tenant_id for r in results],
            [r.data.task_id for r in results],
        )
        lacking = {r["a"] for r in rows}
        return [r for r in results if r.data.action_id in lacking]

    async def held_unknown(self, action_ids: list[str]) -> set[str]:
        """Of `action_ids`, those whose reservation is held for a human's finding (`hold_unknown`): a resolution ends it."""
        rows = await self.pool.fetch(
            "SELECT action_id FROM policy.reservations WHERE action_id = ANY($1::text[]) AND status = 'reserved'"
            " AND outcome_unknown_at IS NOT NULL",
            action_ids,
        )
        return {r["action_id"] for r in rows}

    async def decision(self, decided: SignedEvent, proposal: ActionProposedData | None, authorized: str | None) -> Restored:
        """Record `decided` (the policy's signed decision, verified) as `decide_many` records a decision, unless its key holds one.

        Its reservation, spend and payout are written as they were when it was taken (`_INSERT_DECISIONS`), over the
        history the database holds now. `proposal`: the verified proposal it decided, when the bus still holds it (else the
        call as the decision states it); `authorized`: its signed `action.authorized` as published, republished on redelivery.
        """
        data = decided.data(ActionDecidedData)
        reservation = None
        if data.outcome == "allow":  # as `authorization.build_record` reserves it
            reservation = Reservation(data.action_id, data.tenant_id, data.task_id, data.tool, data.args, data.estimated_cost_usd)
        record = DecisionRecord(
            key=decision_key(data),
            action_id=data.action_id,
            tenant_id=data.tenant_id,
            task_id=data.task_id,
            outcome=data.outcome,
            action_digest=data.action_digest,
            proposal=proposal or _proposal_of(data),
            decided_event=decided.text,
            authorized_event=authorized,
            reservation=reservation,
        )

        def as_signed(history: History) -> DecisionRecord:
            return record  # never decided again: the history of today is not the one it was taken on

        payee = payee_of(self.service.catalog.get(data.tool), data.args)
        [(_, fresh)] = await self.service.repo.decide_many([Pending(record.key, data.tenant_id, data.task_id, payee, as_signed)])
        return "recorded" if fresh else "already"

    async def results(self, results: list[ActionResult]) -> None:
        """Record each result as the running service records one (`on_results`): its ending, its reservation's fate, its payee."""
        await self.service.on_results(results)

    async def resolution(self, resolved: Approval) -> None:
        """Record a human's finding on an unknown outcome (`approval.resolved`) as the running service does."""
        if isinstance(resolved, ApprovalResolved):
            await self.service.on_approval(resolved)
