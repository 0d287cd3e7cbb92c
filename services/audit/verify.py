"""`tidegate audit verify`: recompute every chain and check every checkpoint against it.

A row edited, deleted, inserted or moved breaks its chain (its hash, or the link to the row before
it: `chain_check.py`). Rows cut off at the end of a chain leave the chain intact; only a signed checkpoint
that names a later head shows it (`checkpoint_check.py`). The first broken link of each chain is reported
with where and what.

A chain may be checked from a signed head on (its anchor) rather than from seq 1: after a prune (the rows
before it are in an archive, `archive.py`) or when asked to (`--from-checkpoint`). The anchor row must be
the one signed, unchanged; every row after it is checked as always.

The hashes prove the rows were not changed since they were written, not that the audit service wrote them:
its database login may INSERT. So `verify` also reports every conflict the service recorded (`audit.conflicts`:
a record the bus delivered at a position whose row holds other content) that no operator acknowledged
(`conflict_check.py`), and, with `recheck` (`signature_check.py`, `--signatures`), re-observes every row from its
own value: a row that claims a signature its value does not carry, whose columns say other than its value, or stored
refused for no reason a change of keys explains, is named, and so is a row flagged a duplicate of an event no other
valid row holds (`DuplicateCheck`). Comparing every row with the bus is `content.py` (`--content`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from servicekit import Keyring
from services.audit.acknowledgements import KeyHolders, judge
from services.audit.chain import Head
from services.audit.chain_check import Break, ChainChecker
from services.audit.checkpoint_check import (
    anchor_heads,
    check_checkpoints,
    check_superseded,
    checkpoint_break,
    heads_checked,
    past_restore,
    prune_anchor,
    within_restore,
)
from services.audit.checkpoints import CHECKPOINT_TOPIC, Checkpoint, Restore, rows_past, signature_valid, split_chain_name
from services.audit.conflict_check import AcknowledgedConflict, conflict_breaks
from services.audit.repository import AuditLog
from services.audit.signature_check import DuplicateCheck, Recheck, signature_recheck

__all__ = [
    "AcknowledgedConflict",
    "Break",
    "ChainChecker",
    "NewestCheckpoint",
    "Recheck",
    "RestoreSeen",
    "SupersededCheckpoint",
    "VerifyReport",
    "anchor_heads",
    "check_checkpoints",
    "prune_anchor",
    "signature_recheck",
    "starting_heads",
    "verify_log",
]


class NewestCheckpoint(BaseModel):
    """The newest checkpoint verify knows (stored, or with `--bus` published) and what the log holds past it."""

    model_config = ConfigDict(frozen=True)

    checkpoint_id: int
    taken_at: datetime
    age_s: float
    """Seconds between `taken_at` and the verify."""


class SupersededCheckpoint(BaseModel):
    """A checkpoint published on the bus that a restore superseded (it is not in the database)."""

    model_config = ConfigDict(frozen=True)

    checkpoint_id: int
    taken_at: datetime
    rows_past_restore: int
    """Rows it signed past the heads the restore's checkpoint signed: checked again by count only, not by hash."""


class RestoreSeen(BaseModel):
    """A restore recorded in `audit.restores`: the audit service found its database behind the bus on starting.

    Nothing in the database tells a restore from a backup apart from checkpoints deleted before a start
    (docs/audit.md): one nobody performed is tampering.
    """

    model_config = ConfigDict(frozen=True)

    checkpoint_id: int
    """The restore's checkpoint: it signs the heads the database held when the service started on it."""
    superseded_from: int
    """The first checkpoint id it superseded (through `checkpoint_id` - 1)."""
    taken_at: datetime | None
    """When the service took the restore's checkpoint (None: that checkpoint is missing, a break)."""
    superseded: list[SupersededCheckpoint] | None = None
    """The published checkpoints it superseded (`--bus`); None: the bus was not read."""


class VerifyReport(BaseModel):
    """What verify checked and the first broken link of each chain (empty when the log is intact)."""

    model_config = ConfigDict(frozen=True)

    rows: int
    chains: int
    checkpoints: int
    seconds: float
    breaks: list[Break]
    kept_from: int | None = None
    """The checkpoint whose signed heads the chains were checked from (None: every chain from seq 1)."""
    kept_from_reason: str | None = None
    """`pruned` (the rows before are archived) or `requested` (`--from-checkpoint`: they were not re-hashed)."""
    rows_before: int = 0
    """Rows before the anchor heads, not checked here (archived, or skipped on request)."""
    checkpoints_before: int = 0
    """Checkpoints older than `kept_from`: their signatures and ids checked, their heads not (they are before the anchor)."""
    conflicts: int = 0
    """Conflicts the audit service recorded (`audit.conflicts`), each a break unless in `acknowledged`."""
    acknowledged: list[AcknowledgedConflict] = []
    """The recorded conflicts an operator on the allow-list acknowledged (signed): shown, not breaks."""
    signatures_checked: int | None = None
    """Rows stored as valid events whose verdict was reached again (`--signatures`); None: not asked."""
    newest: NewestCheckpoint | None = None
    """The newest checkpoint a trusted audit key signed (None: the log has none)."""
    rows_unsigned: int = 0
    """Rows the chains hold past the heads `newest` signed (all of them without one): not signed yet."""
    restores: list[RestoreSeen] = []
    """Every restore recorded (`audit.restores`), with the published checkpoints each superseded when the bus was read."""

    @property
    def ok(self) -> bool:
        """True when every chain and checkpoint checks out."""
        return not self.breaks


async def verify_log(
    log: AuditLog,
    keyring: Keyring,
    *,
    prefix: str = "",
    extra_checkpoints: Iterable[Checkpoint] = (),
    from_checkpoint: int | None = None,
    recheck: Recheck | None = None,
    operators: KeyHolders | None = None,
) -> VerifyReport:
    """Recompute every chain of the deployment `prefix` and check its checkpoints.

    `extra_checkpoints` are copies kept elsewhere (the bus): one missing from or differing from
    the database is a break, and the copy is what the chains are checked against. After a prune, each
    chain is checked from the head the prune's checkpoint signed; `from_checkpoint` checks them from that
    checkpoint's heads instead, when it is later (fast, incremental: the rows before are not re-hashed).
    Every conflict the service recorded is a break unless an operator of `operators` (the allow-list: `Authority`) signed
    its acknowledgement (none counts without it); with `recheck`, so is every row whose stored verdict it refutes.

    Raises:
        LookupError: `from_checkpoint` is not a validly signed checkpoint of the log.
    """
    started = time.perf_counter()
    by_id = {cp.checkpoint_id: cp for cp in await log.checkpoints(prefix)}
    restores = await log.restores(prefix)
    breaks: list[Break] = []
    superseded: list[tuple[Checkpoint, Checkpoint]] = []
    extra = list(extra_checkpoints)
    for cp in extra:
        stored = by_id.get(cp.checkpoint_id)
        restore = next((r for r in restores if r.supersedes(cp.checkpoint_id) and r.checkpoint_id in by_id), None)
        if stored is None and restore is not None:  # taken before the database was restored from a backup
            superseded.append((cp, by_id[restore.checkpoint_id]))
        elif stored is None:
            breaks.append(
                checkpoint_break(cp, "published on the bus but missing from the database, and no restore (audit.restores) explains it")
            )
            by_id[cp.checkpoint_id] = cp
        elif (stored.heads, stored.rows, stored.signature) != (cp.heads, cp.rows, cp.signature):
            breaks.append(checkpoint_break(cp, "differs from the copy published on the bus"))
            by_id[cp.checkpoint_id] = cp  # the published copy is the one the attacker could not edit
    checkpoints = [by_id[k] for k in sorted(by_id)]
    start, reason, prune_breaks = await _start(log, prefix, by_id, keyring, from_checkpoint)
    anchors = anchor_heads(start) if start is not None else {}
    within = [within_restore(cp, restored) for cp, restored in superseded]
    wanted: dict[tuple[str, int], set[int]] = {}
    for cp in [*checkpoints, *within]:
        for name, head in cp.heads.items():
            wanted.setdefault(split_chain_name(name), set()).add(int(head["seq"]))
    windows: dict[tuple[str, int], dict[tuple[int, int], int]] = {}
    for cp, restored in superseded:
        for name, (window, _) in past_restore(cp, restored).items():
            windows.setdefault(split_chain_name(name), {})[window] = 0
    checkers: dict[tuple[str, int], ChainChecker] = {}
    chain_breaks: list[Break] = []
    verdict_breaks: list[Break] = []
    rechecked = 0
    duplicates = DuplicateCheck()
    for topic, partition in sorted({*await log.chains(prefix), *anchors}):
        tp = (topic, partition)
        anchor = anchors.get(tp)
        checker = ChainChecker(
            topic, partition, wanted=wanted.get(tp, set()), windows=windows.get(tp, {}), anchor=anchor,
            anchor_checkpoint=start.checkpoint_id if start is not None else 0,
        )  # fmt: skip
        checkers[tp] = checker
        async for row in log.chain_rows(topic, partition, first=anchor.seq if anchor is not None else 1):
            if recheck is not None:  # every row: a refused one too may be a genuine event recorded refused
                rechecked += row.valid
                duplicates.feed(row)
                if (problem := recheck(row)) is not None:
                    verdict_breaks.append(Break(topic=topic, partition=partition, seq=row.seq, offset=row.kafka_offset, problem=problem))
            if not checker.feed(row):
                break
        checker.finish()
        if checker.broken is not None:
            chain_breaks.append(checker.broken)
    heads_from = start.checkpoint_id if start is not None else 0
    unreadable = await log.unreadable_checkpoints(prefix)
    breaks = chain_breaks + prune_breaks + breaks
    breaks += check_checkpoints(checkpoints, checkers, keyring, restores, heads_from=heads_from, unreadable=unreadable)
    breaks += check_superseded(superseded, checkers, keyring) + heads_checked(within, checkers)
    conflicts = await log.conflicts(prefix)
    acks = await log.acknowledgements(prefix)
    conflicted, acknowledged = conflict_breaks(judge(conflicts, acks, operators))
    breaks += conflicted + verdict_breaks
    # Rows before an anchor (--from-checkpoint's, a prune's) were not read: the row a duplicate duplicates is asked of the
    # whole log; one pruned into an archive may be there (auditor2 N3: the daily `--from-checkpoint` skipped the check).
    unmatched = duplicates.unmatched()
    elsewhere = await log.unflagged_event_ids(unmatched) if unmatched and anchors else set()
    pruned = bool(unmatched) and bool(await log.prunes(prefix))
    breaks += [
        Break(topic=row.topic, partition=row.partition, seq=row.seq, offset=row.kafka_offset, problem=problem)
        for row, problem in duplicates.problems(elsewhere=elsewhere, pruned=pruned)
    ]
    newest = next((cp for cp in reversed(checkpoints) if signature_valid(keyring, cp)), None)  # a forged one is no freshness
    return VerifyReport(
        rows=sum(c.rows for c in checkers.values()),
        chains=len(checkers),
        checkpoints=len(checkpoints),
        seconds=time.perf_counter() - started,
        breaks=breaks,
        kept_from=start.checkpoint_id if start is not None else None,
        kept_from_reason=reason,
        rows_before=sum(a.seq - 1 for a in anchors.values()),
        checkpoints_before=sum(1 for cp in checkpoints if cp.checkpoint_id < heads_from),
        conflicts=len(conflicts),
        acknowledged=acknowledged,
        signatures_checked=rechecked if recheck is not None else None,
        newest=_newest(newest),
        rows_unsigned=rows_past(await log.heads(prefix), newest.heads if newest is not None else {}, prefix + CHECKPOINT_TOPIC),
        restores=_restores_seen(restores, by_id, superseded, bus=bool(extra)),
    )


def _newest(cp: Checkpoint | None) -> NewestCheckpoint | None:
    """`cp`, the newest checkpoint, with its age now."""
    if cp is None:
        return None
    return NewestCheckpoint(checkpoint_id=cp.checkpoint_id, taken_at=cp.taken_at, age_s=(datetime.now(UTC) - cp.taken_at).total_seconds())


def _restores_seen(
    restores: Iterable[Restore], by_id: dict[int, Checkpoint], superseded: list[tuple[Checkpoint, Checkpoint]], *, bus: bool
) -> list[RestoreSeen]:
    """Every restore, each with the published checkpoints it superseded (when the bus was read)."""
    seen = []
    for r in restores:
        mine = [
            SupersededCheckpoint(
                checkpoint_id=cp.checkpoint_id,
                taken_at=cp.taken_at,
                rows_past_restore=sum(signed for _, signed in past_restore(cp, restored).values()),
            )
            for cp, restored in superseded
            if restored.checkpoint_id == r.checkpoint_id
        ]
        taken = by_id[r.checkpoint_id].taken_at if r.checkpoint_id in by_id else None
        seen.append(
            RestoreSeen(checkpoint_id=r.checkpoint_id, superseded_from=r.superseded_from, taken_at=taken, superseded=mine if bus else None)
        )
    return seen


async def _start(
    log: AuditLog, prefix: str, by_id: dict[int, Checkpoint], keyring: Keyring, from_checkpoint: int | None
) -> tuple[Checkpoint | None, str | None, list[Break]]:
    """The checkpoint the chains are checked from, why (`pruned`, `requested`), and the breaks of prunes that name no valid checkpoint."""
    pruned, breaks = prune_anchor(await log.prunes(prefix), by_id, keyring)
    if from_checkpoint is None or (pruned is not None and from_checkpoint <= pruned.checkpoint_id):
        return pruned, "pruned" if pruned is not None else None, breaks
    asked = by_id.get(from_checkpoint)
    if asked is None or not signature_valid(keyring, asked):
        raise LookupError(f"checkpoint {from_checkpoint} is not a validly signed checkpoint of this log: verify cannot start from it")
    return asked, "requested", breaks


async def starting_heads(
    log: AuditLog, keyring: Keyring, *, prefix: str = "", from_checkpoint: int | None = None
) -> dict[tuple[str, int], Head]:
    """The heads `verify_log` will check each chain from (none: from seq 1), for a progress display's total."""
    by_id = {cp.checkpoint_id: cp for cp in await log.checkpoints(prefix)}
    start, _, _ = await _start(log, prefix, by_id, keyring, from_checkpoint)
    return anchor_heads(start) if start is not None else {}
