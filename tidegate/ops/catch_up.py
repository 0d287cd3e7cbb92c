"""`tidegate db catch-up`: after a database restore, write back from the bus what the executor, approval and policy did since.

The three refuse to start on a database behind the bus (`servicekit.bus_history`). This reads the bus (from the
earliest record it keeps, or from `since_ms`), verifies every event with the deployment's keys, and writes each one
the database lacks through the service's own code: the executor's signed result of an action without a finished
claim becomes its finished claim (the event kept as it was published); the approval service's request made since
the backup is rebuilt from the policy's escalation, then each decision of a request still pending is recorded (its
approvals signed with the approval service's key); the policy's signed decision is recorded as it was taken, with its
reservation, spend and payout (`decide_many`, never decided again) and the proposal it was taken on (a copy of the call
naming another requester or proposer than the decision is not it: `_decided_on`), then each result and finding on an
unknown outcome the policy has not recorded is recorded as the running policy records it. Last, the planner is handed
again, through its own handlers and in the order the broker appended them, the events its restored database has not
seen and its consumer group had handled (`services.planner.replay`): its tasks are where they were, nothing published
again. Idempotent: a second run writes nothing.
An event of `actions.results`, `approvals` or `actions.decided` that does not verify stops it (`NotCaughtUp`): nothing
is trusted that its producer did not sign; so does a planner still running (its group has members).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from schemas import (
    ActionAuthorized,
    ActionDecided,
    ActionDecidedData,
    ActionFailed,
    ActionProposed,
    ActionProposedData,
    ActionResult,
    ActionResultData,
    ActionSucceeded,
    ActionUnknown,
    ApprovalData,
    ApprovalResolved,
    action_digest,
)
from servicekit import OPS, KitSettings, ToolCatalog, create_pool, deployment_authority, kafka_options, service_key
from servicekit.bus_history import GroupInUse, SignedEvent, signed_events
from servicekit.catch_up_marks import catch_up_began, catch_up_finished
from services.approval import DECIDED, ApprovalSettings, GroupsConfig, PgApprovalRepository, Restoration, approval_seals
from services.executor import PgClaimStore, keep_signed_result
from services.planner import PlannerSettings, replay
from services.policy import Restoration as PolicyRestoration

__all__ = ["CaughtUp", "NotCaughtUp", "catch_up"]

OWNER = "tidegate db catch-up"


class NotCaughtUp(RuntimeError):
    """An event the catch-up would write from does not verify, or a planner runs: it stops, having written what it had before."""


@dataclass
class CaughtUp:
    """What the catch-up found and wrote, by kind (`executor claims recorded`, `approval decisions recorded`, …)."""

    counts: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Reader:
    """Reads each topic whole once, however many steps need it (a topic of a real bus takes minutes to read and verify)."""

    kit: KitSettings
    since_ms: int | None
    say: Callable[[str], None]
    options: dict[str, Any]
    _read: dict[str, tuple[list[SignedEvent], list[str]]] = field(default_factory=dict)  # topic: (verified, refused)

    async def read(self, catalog_name: str, *, strict: bool) -> list[SignedEvent]:
        """Every verified event of `catalog_name`; a record that does not verify stops the catch-up when `strict`, else is skipped."""
        topic = self.kit.topic_prefix + catalog_name
        if catalog_name not in self._read:
            self._read[catalog_name] = await self._whole(catalog_name, topic, strict=strict)
        found, refused = self._read[catalog_name]
        if strict and refused:  # read before by a step that could skip it
            raise NotCaughtUp(_stops(refused[0]))
        return found

    async def _whole(self, catalog_name: str, topic: str, *, strict: bool) -> tuple[list[SignedEvent], list[str]]:
        authority = deployment_authority(self.kit, ToolCatalog.load(*self.kit.tool_dirs), history=True)
        refused: list[str] = []

        def on_refused(record: Any, why: str) -> None:
            refused.append(f"{topic}[{record.partition}] offset {record.offset}: {why}")
            if strict:
                raise NotCaughtUp(_stops(refused[-1]))

        def progress(read: int, total: int) -> None:
            self.say(f"  {topic}: {read:,}/{total:,} records read")

        found = [
            e
            async for e in signed_events(
                self.kit.kafka_bootstrap, self.kit.topic_prefix, catalog_name, authority,
                since_ms=self.since_ms, client_options=self.options, progress=progress, refused=on_refused,
            )
        ]  # fmt: skip
        if refused:
            self.say(f"  {topic}: {len(refused)} record(s) that do not verify skipped (not needed to write anything)")
        return found, refused


def _stops(refused: str) -> str:
    return f"{refused}: not written from; the catch-up stops (nothing on the bus is trusted unsigned)"


async def catch_up(kit: KitSettings, *, since_ms: int | None = None, say: Callable[[str], None] = print) -> CaughtUp:
    """Write back into the restored database what the bus says the executor, the approval service and the policy did (see the module)."""
    reader = _Reader(kit, since_ms, say, kafka_options(kit, OPS))
    done = CaughtUp()
    pool = await create_pool(kit.operator_database_url, max_size=2)  # the operator's login, as `db migrate` (its password file)
    try:
        await catch_up_began(pool)  # until it is marked finished, the services refuse to start (`servicekit.catch_up_marks`)
        await _executor(reader, pool, kit, done)
        await _approvals(reader, pool, kit, done)
        await _policy(reader, pool, kit, done)
        await _planner(pool, kit, since_ms, say, done)  # before the mark: a catch-up cut off here is run again, and replays again
        await catch_up_finished(pool)
    finally:
        await pool.close()
    return done


async def _executor(reader: _Reader, pool: asyncpg.Pool, kit: KitSettings, done: CaughtUp) -> None:
    results: dict[str, SignedEvent] = {}
    for result in await reader.read("actions.results", strict=True):
        results.setdefault(result.data(ActionResultData).action_id, result)  # a republished result is the same
    rows = await pool.fetch("SELECT action_id, status FROM executor.actions WHERE action_id = ANY($1::text[])", list(results))
    finished = {r["action_id"] for r in rows if r["status"] in ("succeeded", "failed", "unknown")}
    lacking = {a: r for a, r in results.items() if a not in finished}
    done.counts["executor results on the bus"] = len(results)
    if not lacking:
        return
    authorizations: dict[str, ActionAuthorized] = {}
    for signed in await reader.read("actions.authorized", strict=False):
        if isinstance(signed.event, ActionAuthorized) and signed.event.data.action_id in lacking:
            authorizations.setdefault(signed.event.data.action_id, signed.event)
    claims = PgClaimStore(pool, owner=OWNER, prefix=kit.topic_prefix)
    for action_id, result in lacking.items():
        kept = await keep_signed_result(claims, result, authorizations.get(action_id))
        done.counts[f"executor claims {kept}"] += 1
        if kept != "already" and action_id not in authorizations:
            done.notes.append(f"action {action_id}: its authorization has left the bus; its claim keeps the result without its call")


async def _approvals(reader: _Reader, pool: asyncpg.Pool, kit: KitSettings, done: CaughtUp) -> None:
    events = await reader.read("approvals", strict=True)
    requested = {e.data(ApprovalData).approval_id: e for e in events if e.event.type == "tidegate.approval.requested"}
    decisions = [e for e in events if e.event.type in DECIDED]
    done.counts["approval decisions on the bus"] = len(decisions)
    ids = list(requested) + [e.data(ApprovalData).approval_id for e in decisions]
    held = {
        r["approval_id"] for r in await pool.fetch("SELECT approval_id FROM approval.approvals WHERE approval_id = ANY($1::text[])", ids)
    }
    restoration = _restoration(kit, pool)
    missing = {e.data(ApprovalData).action_id: e for a, e in requested.items() if a not in held}
    if missing:
        escalations: dict[str, ActionDecidedData] = {}
        for signed in await reader.read("actions.decided", strict=False):
            event = signed.event
            if isinstance(event, ActionDecided) and event.data.action_id in missing and event.data.outcome == "escalate":
                escalations[event.data.action_id] = event.data  # the latest: the one the request was opened or refreshed from
        for action_id, request in missing.items():
            outcome = await restoration.request(request, escalations.get(action_id))
            done.counts[f"approval requests {outcome}"] += 1
            if outcome == "missing":
                done.notes.append(
                    f"approval {request.data(ApprovalData).approval_id}: the policy's escalation has left the bus; not rebuilt"
                )
    for decision in decisions:
        outcome = await restoration.decision(decision)
        done.counts[f"approval decisions {outcome}"] += 1
        if outcome == "differs":
            done.notes.append(
                f"approval {decision.data(ApprovalData).approval_id}: decided otherwise in the database than on the bus; left as it is"
            )


def _restoration(kit: KitSettings, pool: asyncpg.Pool) -> Restoration:
    """The approval service's own writing: its repository, its key's seals, its groups and catalog."""
    settings = ApprovalSettings()
    authority = deployment_authority(kit, None)
    seals = approval_seals(authority, service_key=service_key(kit, "approval"))
    catalog = ToolCatalog.load(*kit.tool_dirs) if Path(kit.tools_dir).is_dir() else None

    def risk_of(tool: str) -> str:
        return str(catalog[tool].risk) if catalog is not None and tool in catalog else "unknown"

    return Restoration(PgApprovalRepository(pool, "approval", seals=seals), seals, GroupsConfig.load(settings.groups_file), risk_of)


async def _policy(reader: _Reader, pool: asyncpg.Pool, kit: KitSettings, done: CaughtUp) -> None:
    """The policy's decisions since the backup, recorded as signed (never decided again); then the results and findings it lacks."""
    restoration = PolicyRestoration.of(kit, pool)
    decided = await reader.read("actions.decided", strict=True)
    done.counts["policy decisions on the bus"] = len(decided)
    if lacking := await restoration.lacking(decided):
        wanted = {d.data(ActionDecidedData).action_id for d in lacking}
        copies: dict[tuple[str, str, str], list[ActionProposedData]] = {}  # every verified copy of each call, in the order read
        for signed in await reader.read("actions.proposed", strict=False):
            if isinstance(signed.event, ActionProposed) and (p := signed.event.data).action_id in wanted:
                copies.setdefault((p.action_id, p.tenant_id, action_digest(p.tenant_id, p.tool, p.args)), []).append(p)
        authorized: dict[tuple[str, str | None], str] = {}
        for signed in await reader.read("actions.authorized", strict=False):
            if isinstance(signed.event, ActionAuthorized) and (a := signed.event.data).action_id in wanted:
                authorized.setdefault((a.action_id, a.authorization.approval_id), signed.text)
        for signed in lacking:
            data = signed.data(ActionDecidedData)
            found = copies.get((data.action_id, data.tenant_id, data.action_digest), [])
            made_on = [p for p in found if _decided_on(data, p)]  # several: the same proposal published again, the first kept
            grant = authorized.get((data.action_id, data.approval_id if data.via == "approval" else None))
            outcome = await restoration.decision(signed, made_on[0] if made_on else None, grant)
            done.counts[f"policy decisions {outcome}"] += 1
            ignored = len(found) - len(made_on)
            other = (
                f" ({ignored} cop{'y' if ignored == 1 else 'ies'} of its call on the bus, not the proposal it was decided on "
                "(another requester, proposer, rationale, step, mode, budget or confidence), ignored)"
                if ignored
                else ""
            )
            if not made_on:
                done.notes.append(
                    f"action {data.action_id}: its proposal has left the bus{other}; its decision keeps the call as it states it"
                )
            elif ignored:
                done.notes.append(f"action {data.action_id}: its decision keeps the proposal it was decided on{other}")
    results: dict[str, ActionResult] = {}
    for signed in await reader.read("actions.results", strict=True):
        if isinstance(signed.event, ActionSucceeded | ActionFailed | ActionUnknown):  # every event of the topic is one
            results.setdefault(signed.event.data.action_id, signed.event)  # a result published again is the same
    ended = await restoration.unended(list(results.values()))
    await restoration.results(ended)
    done.counts["policy results recorded"] = len(ended)
    resolved = [e.event for e in await reader.read("approvals", strict=True) if isinstance(e.event, ApprovalResolved)]
    held = await restoration.held_unknown([r.data.action_id for r in resolved])
    for finding in (r for r in resolved if r.data.action_id in held):
        await restoration.resolution(finding)
        done.counts["policy findings recorded"] += 1


async def _planner(pool: asyncpg.Pool, kit: KitSettings, since_ms: int | None, say: Callable[[str], None], done: CaughtUp) -> None:
    """Hand the planner again, in the order they happened, the events its restored database has not seen; each partition said."""
    try:
        replayed = await replay(kit, pool, PlannerSettings(), since_ms=since_ms, say=say)
    except GroupInUse as exc:
        raise NotCaughtUp(f"planner: {exc} (`tidegate down`), then run the catch-up again") from exc
    for (name, partition), (first, last, count) in sorted(replayed.partitions.items()):
        say(f"  planner: {name}[{partition}] offsets {first:,}-{last:,}: {count:,} events handed again")
    done.counts["planner events handed again"] = replayed.handled
    done.counts["planner tasks moved on"] = replayed.tasks_moved
    if replayed.refused:
        done.notes.append(f"planner: {replayed.refused} record(s) that do not verify skipped, as its consumers dead-lettered them")


def _decided_on(decision: ActionDecidedData, proposal: ActionProposedData) -> bool:
    """Whether `proposal` (a verified copy of the decision's call) is the one the signed `decision` was taken on.

    Any client of the tenant can publish a copy of a call (same action id, tenant and digest) with its own requester,
    proposer, task budget, taint, confidence or `undoes`, on a partition read before the genuine one: what the policy
    records as the proposal is what a later grant is decided again on. The Authority binds a client key to its tenant
    and requester and refuses a client claiming a `tidegate/…` proposer, so a copy is the decision's only when every
    field the decision states of its proposal is the proposal's: the requester, the proposer, the rationale, the task
    and step, a mode no looser than the decision's, and the task budget and confidence its facts name (when they do).
    """
    facts = decision.facts
    return (
        (proposal.task_id, proposal.step, proposal.requested_by, proposal.proposer, proposal.rationale)
        == (decision.task_id, decision.step, decision.requested_by, decision.proposer, decision.rationale)
        and (decision.mode == "draft" or proposal.mode == "autonomous")  # a decision's mode is its proposal's, or stricter
        and facts.get("task_budget_usd", proposal.budget_usd) == proposal.budget_usd
        and facts.get("confidence", proposal.confidence) == proposal.confidence
    )
