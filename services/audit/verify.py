"""`tidegate audit verify`: recompute every chain and check every checkpoint against it.

A row edited, deleted, inserted or moved breaks its chain (its hash, or the link to the row before
it). Rows cut off at the end of a chain leave the chain intact; only a signed checkpoint that names
a later head shows it. The first broken link of each chain is reported with where and what.

A chain may be checked from a signed head on (its anchor) rather than from seq 1: after a prune (the rows
before it are in an archive, `archive.py`) or when asked to (`--from-checkpoint`). The anchor row must be
the one signed, unchanged; every row after it is checked as always.

The hashes prove the rows were not changed since they were written, not that the audit service wrote them:
its database login may INSERT. So `verify` also reports every conflict the service recorded (`audit.conflicts`:
a record the bus delivered at a position whose row holds other content), and, with `recheck`
(`signature_recheck`, `--signatures`), re-observes each row stored as a valid event: a row that claims a
signature its value does not carry is named. Comparing every row with the bus is `content.py` (`--content`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from servicekit import Keyring
from servicekit.intake import Bounds
from services.audit.chain import Head
from services.audit.checkpoints import Checkpoint, Prune, Restore, signature_valid, split_chain_name
from services.audit.records import EPOCH, GENESIS, LogRow, SignatureCheck, observe
from services.audit.repository import AuditLog

__all__ = [
    "Break",
    "ChainChecker",
    "Recheck",
    "VerifyReport",
    "anchor_heads",
    "check_checkpoints",
    "prune_anchor",
    "signature_recheck",
    "starting_heads",
    "verify_log",
]


class Break(BaseModel):
    """One broken link: where it is and what is wrong."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    seq: int | None = None
    offset: int | None = None
    checkpoint_id: int | None = None
    problem: str

    def describe(self) -> str:
        """One line for a person."""
        where = f"{self.topic}[{self.partition}]"
        if self.seq is not None:
            where += f" seq {self.seq}"
        if self.offset is not None:
            where += f" (offset {self.offset})"
        if self.checkpoint_id is not None:
            where += f", checkpoint {self.checkpoint_id}"
        return f"{where}: {self.problem}"


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
    """Conflicts the audit service recorded (`audit.conflicts`), each also a break."""
    signatures_checked: int | None = None
    """Rows stored as valid events whose verdict was reached again (`--signatures`); None: not asked."""

    @property
    def ok(self) -> bool:
        """True when every chain and checkpoint checks out."""
        return not self.breaks


@dataclass
class ChainChecker:
    """Walks one chain in seq order; stops at its first broken link."""

    topic: str
    partition: int
    wanted: set[int] = field(default_factory=set)
    # The signed head the chain is checked from (after a prune, or on request), and which checkpoint signed it.
    anchor: Head | None = None
    anchor_checkpoint: int = 0
    # In an archive: the head the chain's rows start after (not in the file; the archive before holds it).
    after: Head | None = None
    # Offset windows (after, through] a checkpoint superseded by a restore signed past the restored head, and the rows found in each.
    windows: dict[tuple[int, int], int] = field(default_factory=dict)
    rows: int = 0
    last_seq: int = 0
    last_hash: bytes = GENESIS
    last_offset: int = -1
    at: dict[int, LogRow] = field(default_factory=dict)
    broken: Break | None = None

    def __post_init__(self) -> None:
        if self.anchor is not None:
            self.last_seq, self.last_offset = self.anchor.seq - 1, self.anchor.offset - 1
        elif self.after is not None:
            self.last_seq, self.last_hash, self.last_offset = self.after.seq, self.after.hash, self.after.offset

    def _break(self, row: LogRow, problem: str) -> None:
        self.broken = Break(topic=self.topic, partition=self.partition, seq=row.seq, offset=row.kafka_offset, problem=problem)

    def feed(self, row: LogRow) -> bool:
        """Check the next row; False once the chain is broken (later rows prove nothing more)."""
        if self.broken is not None:
            return False
        self.rows += 1
        expected_seq = self.last_seq + 1
        anchor = self.anchor
        if anchor is not None and row.seq != expected_seq and self.last_seq == anchor.seq - 1:
            self._break(
                row,
                f"seq {anchor.seq}, the head checkpoint {self.anchor_checkpoint} signed and the chain is kept from, is missing "
                "(rows deleted?)",
            )
        elif row.seq != expected_seq:
            gap = f"seq {expected_seq}" if row.seq == expected_seq + 1 else f"seq {expected_seq}..{row.seq - 1}"
            self._break(row, f"{gap} missing: the row before this one is seq {self.last_seq} (rows deleted?)")
        elif anchor is not None and row.seq == anchor.seq:
            if (row.hash, row.kafka_offset) != (anchor.hash, anchor.offset):
                self._break(
                    row, f"row differs from the head checkpoint {self.anchor_checkpoint} signed, where the chain is kept from (rewritten)"
                )
            elif row.expected_hash() != row.hash:
                self._break(row, "content does not match its hash (row edited)")
        elif row.prev_hash != self.last_hash:
            self._break(row, f"prev_hash does not match the hash of seq {self.last_seq} (a row inserted, deleted or moved before this one)")
        elif row.expected_hash() != row.hash:
            self._break(row, "content does not match its hash (row edited)")
        elif row.kafka_offset <= self.last_offset:
            self._break(row, f"offset {row.kafka_offset} is not after the previous row's offset {self.last_offset} (rows reordered?)")
        if self.broken is not None:
            return False
        if row.seq in self.wanted:
            self.at[row.seq] = row
        for after, through in self.windows:
            if after < row.kafka_offset <= through:
                self.windows[(after, through)] += 1
        self.last_seq, self.last_hash, self.last_offset = row.seq, row.hash, row.kafka_offset
        return True

    def finish(self) -> None:
        """After the last row: an anchored chain with no row left lost its anchor too."""
        if self.broken is None and self.anchor is not None and self.last_seq < self.anchor.seq:
            problem = (
                f"seq {self.anchor.seq}, the head checkpoint {self.anchor_checkpoint} signed and the chain is kept from, is missing: "
                "the chain has no row (rows deleted?)"
            )
            self.broken = Break(topic=self.topic, partition=self.partition, seq=self.anchor.seq, offset=self.anchor.offset, problem=problem)


Recheck = Callable[[LogRow], str | None]
"""The problem with a row's stored verdict, reached again from its value (None: it holds)."""


def signature_recheck(check: SignatureCheck, prefix: str, bounds: Bounds) -> Recheck:
    """A `Recheck` that observes a row's value again as the audit service did (`check`: the history authority).

    Only a row stored as a valid event is asked about: one the authority refuses now claims a signature it
    does not carry (or a key that was taken out of the keyring: keep retired public keys). A row stored as
    refused is not: a key registered since may verify it now, and a refused event grants nothing.
    """

    def recheck(row: LogRow) -> str | None:
        if not row.valid:
            return None
        stamp_ms = (row.kafka_ts - EPOCH) // timedelta(milliseconds=1)
        again = observe(
            topic=row.topic, partition=row.partition, offset=row.kafka_offset, timestamp_ms=stamp_ms, timestamp_type=row.ts_type,
            key=row.key, value=row.value, headers=None, prefix=prefix, bounds=bounds, check=check,
        )  # fmt: skip
        if again.valid:
            return None
        return f"stored as a valid event, but its value does not verify: {again.invalid_reason} (a row the audit service did not write?)"

    return recheck


def anchor_heads(cp: Checkpoint) -> dict[tuple[str, int], Head]:
    """The heads `cp` signed, as chain anchors."""
    return {split_chain_name(name): Head(int(h["seq"]), bytes.fromhex(str(h["hash"])), int(h["offset"])) for name, h in cp.heads.items()}


def prune_anchor(prunes: Iterable[Prune], by_id: dict[int, Checkpoint], keyring: Keyring) -> tuple[Checkpoint | None, list[Break]]:
    """The checkpoint of the latest prune that names a validly signed checkpoint, and a break for each prune that does not.

    A prune record is only a row: a superuser can insert one. What makes it a prune is the signed checkpoint it
    names; without one it anchors nothing, and the rows it claims to have removed are missing rows.
    """
    anchor, breaks = None, []
    for prune in prunes:
        cp = by_id.get(prune.checkpoint_id)
        if cp is None or not signature_valid(keyring, cp):
            what = "no such checkpoint" if cp is None else f"its signature is not valid for a trusted audit key ({cp.key_id})"
            problem = (
                f"a prune (by {prune.pruned_by}, {prune.rows_removed} rows) names checkpoint {prune.checkpoint_id}: {what} "
                "(rows removed outside the prune path?)"
            )
            breaks.append(Break(topic="*", partition=-1, checkpoint_id=prune.checkpoint_id, problem=problem))
        else:
            anchor = cp
    return anchor, breaks


def _cp_break(cp: Checkpoint, problem: str) -> Break:
    return Break(topic="*", partition=-1, checkpoint_id=cp.checkpoint_id, problem=problem)


def check_checkpoints(
    checkpoints: Iterable[Checkpoint],
    checkers: dict[tuple[str, int], ChainChecker],
    keyring: Keyring,
    restores: Iterable[Restore] = (),
    *,
    heads_from: int = 0,
    first_id: int = 1,
) -> list[Break]:
    """Each checkpoint must be validly signed, and every head it signed must still be in its chain.

    The ids run on without a gap from `first_id`, except the ones a restore superseded (`Restore`). The heads of
    checkpoints before `heads_from` (the anchor) are before what the chains hold: only their signatures and ids count.
    """
    breaks: list[Break] = []
    previous: dict[str, int] = {}
    expected_id = first_id
    resumed = {r.checkpoint_id: r.superseded_from for r in restores}
    for cp in checkpoints:
        if resumed.get(cp.checkpoint_id) == expected_id:
            expected_id = cp.checkpoint_id
        if cp.checkpoint_id != expected_id:
            breaks.append(
                Break(
                    topic="*",
                    partition=-1,
                    checkpoint_id=cp.checkpoint_id,
                    problem=f"checkpoints {expected_id}..{cp.checkpoint_id - 1} are missing",
                )
            )
        expected_id = cp.checkpoint_id + 1
        if not signature_valid(keyring, cp):
            breaks.append(
                Break(
                    topic="*",
                    partition=-1,
                    checkpoint_id=cp.checkpoint_id,
                    problem=f"signature is not valid for a trusted audit key ({cp.key_id})",
                )
            )
            continue
        if cp.rows != sum(int(h["seq"]) for h in cp.heads.values()):
            breaks.append(_cp_break(cp, "row count does not match its heads"))
        for name, head in sorted(cp.heads.items()):
            topic, partition = split_chain_name(name)
            seq = int(head["seq"])
            if seq < previous.get(name, 0):
                breaks.append(
                    Break(
                        topic=topic,
                        partition=partition,
                        seq=seq,
                        checkpoint_id=cp.checkpoint_id,
                        problem="head went backwards since the previous checkpoint",
                    )
                )
            previous[name] = seq
            if cp.checkpoint_id >= heads_from and (found := _head_break(cp.checkpoint_id, name, head, checkers)) is not None:
                breaks.append(found)
    return breaks


def _head_break(checkpoint_id: int, name: str, head: dict[str, Any], checkers: dict[tuple[str, int], ChainChecker]) -> Break | None:
    """What is wrong with the row a checkpoint signed as the head `name` (None: it is in its chain, unchanged)."""
    topic, partition = split_chain_name(name)
    seq, digest, offset = int(head["seq"]), str(head["hash"]), int(head["offset"])
    checker = checkers.get((topic, partition))
    if checker is not None and checker.broken is not None and checker.broken.seq is not None and checker.broken.seq <= seq:
        return None  # already reported as a broken link inside the chain
    if checker is not None and checker.anchor is not None and seq < checker.anchor.seq:
        return None  # before the anchor: archived, or not checked on request
    if checker is not None and checker.after is not None and seq <= checker.after.seq:
        return None  # in the archive before this one
    row = checker.at.get(seq) if checker else None
    if row is None:
        end = checker.last_seq if checker else 0
        problem = (
            f"signed head seq {seq} (offset {offset}) is missing: the chain ends at seq {end} (tail truncated: {seq - end} row(s) gone)"
        )
        return Break(topic=topic, partition=partition, seq=seq, offset=offset, checkpoint_id=checkpoint_id, problem=problem)
    if row.hash.hex() != digest or row.kafka_offset != offset:
        problem = "row differs from the signed head (chain rewritten after the checkpoint)"
        return Break(topic=topic, partition=partition, seq=seq, offset=row.kafka_offset, checkpoint_id=checkpoint_id, problem=problem)
    return None


def check_superseded(
    superseded: Iterable[tuple[Checkpoint, Checkpoint]], checkers: dict[tuple[str, int], ChainChecker], keyring: Keyring
) -> list[Break]:
    """Published checkpoints a restore superseded, each with the restore's checkpoint (the heads the restored database held).

    What such a checkpoint signed up to the restored heads is in the restored database: it must be there,
    unchanged (checked by hash, as any head: `_heads_checked`). What it signed past them was recorded again
    from the bus after the restore, with a new `recorded_at` and so a new hash: each chain must hold again
    as many rows between the two heads' offsets as the checkpoint counted. A row short is a record that
    was recorded before the restore and that the bus no longer held when the audit read it again.
    """
    breaks: list[Break] = []
    for cp, restored in superseded:
        if not signature_valid(keyring, cp):
            breaks.append(_cp_break(cp, f"signature is not valid for a trusted audit key ({cp.key_id})"))
            continue
        for name, (window, signed) in sorted(_past_restore(cp, restored).items()):
            topic, partition = split_chain_name(name)
            checker = checkers.get((topic, partition))
            found = checker.windows.get(window, 0) if checker else 0
            if found < signed:
                problem = (
                    f"{signed - found} of the {signed} record(s) at offsets {window[0] + 1}..{window[1]} recorded before the database was "
                    f"restored (to checkpoint {restored.checkpoint_id}) are not in the log again: the bus no longer held them (a gap the "
                    "restore left)"
                )
                breaks.append(Break(topic=topic, partition=partition, offset=window[1], checkpoint_id=cp.checkpoint_id, problem=problem))
    return breaks


def _heads_checked(checkpoints: Iterable[Checkpoint], checkers: dict[tuple[str, int], ChainChecker]) -> list[Break]:
    """Every head of `checkpoints` in its chain, unchanged (their signatures are checked elsewhere)."""
    found = (_head_break(cp.checkpoint_id, name, head, checkers) for cp in checkpoints for name, head in sorted(cp.heads.items()))
    return [b for b in found if b is not None]


def _past_restore(cp: Checkpoint, restored: Checkpoint) -> dict[str, tuple[tuple[int, int], int]]:
    """The chains `cp` signed past the heads `restored` signed: the offset window (after, through] and how many rows it held."""
    past = {}
    for name, head in cp.heads.items():
        before = restored.heads.get(name, {"seq": 0, "offset": -1})
        if int(head["seq"]) > int(before["seq"]):
            past[name] = ((int(before["offset"]), int(head["offset"])), int(head["seq"]) - int(before["seq"]))
    return past


def _within_restore(cp: Checkpoint, restore: Checkpoint) -> Checkpoint:
    """`cp` with only the heads up to those `restore` signed: what the restored database must hold unchanged."""
    past = _past_restore(cp, restore)
    return cp.model_copy(update={"heads": {name: head for name, head in cp.heads.items() if name not in past}})


async def verify_log(
    log: AuditLog,
    keyring: Keyring,
    *,
    prefix: str = "",
    extra_checkpoints: Iterable[Checkpoint] = (),
    from_checkpoint: int | None = None,
    recheck: Recheck | None = None,
) -> VerifyReport:
    """Recompute every chain of the deployment `prefix` and check its checkpoints.

    `extra_checkpoints` are copies kept elsewhere (the bus): one missing from or differing from
    the database is a break, and the copy is what the chains are checked against. After a prune, each
    chain is checked from the head the prune's checkpoint signed; `from_checkpoint` checks them from that
    checkpoint's heads instead, when it is later (fast, incremental: the rows before are not re-hashed).
    Every conflict the service recorded is a break; with `recheck`, so is every row whose stored verdict it refutes.

    Raises:
        LookupError: `from_checkpoint` is not a validly signed checkpoint of the log.
    """
    started = time.perf_counter()
    by_id = {cp.checkpoint_id: cp for cp in await log.checkpoints(prefix)}
    restores = await log.restores(prefix)
    breaks: list[Break] = []
    superseded: list[tuple[Checkpoint, Checkpoint]] = []
    for cp in extra_checkpoints:
        stored = by_id.get(cp.checkpoint_id)
        restore = next((r for r in restores if r.supersedes(cp.checkpoint_id) and r.checkpoint_id in by_id), None)
        if stored is None and restore is not None:  # taken before the database was restored from a backup
            superseded.append((cp, by_id[restore.checkpoint_id]))
        elif stored is None:
            breaks.append(_cp_break(cp, "published on the bus but missing from the database"))
            by_id[cp.checkpoint_id] = cp
        elif (stored.heads, stored.rows, stored.signature) != (cp.heads, cp.rows, cp.signature):
            breaks.append(_cp_break(cp, "differs from the copy published on the bus"))
            by_id[cp.checkpoint_id] = cp  # the published copy is the one the attacker could not edit
    checkpoints = [by_id[k] for k in sorted(by_id)]
    start, reason, prune_breaks = await _start(log, prefix, by_id, keyring, from_checkpoint)
    anchors = anchor_heads(start) if start is not None else {}
    within = [_within_restore(cp, restored) for cp, restored in superseded]
    wanted: dict[tuple[str, int], set[int]] = {}
    for cp in [*checkpoints, *within]:
        for name, head in cp.heads.items():
            wanted.setdefault(split_chain_name(name), set()).add(int(head["seq"]))
    windows: dict[tuple[str, int], dict[tuple[int, int], int]] = {}
    for cp, restored in superseded:
        for name, (window, _) in _past_restore(cp, restored).items():
            windows.setdefault(split_chain_name(name), {})[window] = 0
    checkers: dict[tuple[str, int], ChainChecker] = {}
    chain_breaks: list[Break] = []
    verdict_breaks: list[Break] = []
    rechecked = 0
    for topic, partition in sorted({*await log.chains(prefix), *anchors}):
        tp = (topic, partition)
        anchor = anchors.get(tp)
        checker = ChainChecker(
            topic, partition, wanted=wanted.get(tp, set()), windows=windows.get(tp, {}), anchor=anchor,
            anchor_checkpoint=start.checkpoint_id if start is not None else 0,
        )  # fmt: skip
        checkers[tp] = checker
        async for row in log.chain_rows(topic, partition, first=anchor.seq if anchor is not None else 1):
            if recheck is not None and row.valid:
                rechecked += 1
                if (problem := recheck(row)) is not None:
                    verdict_breaks.append(Break(topic=topic, partition=partition, seq=row.seq, offset=row.kafka_offset, problem=problem))
            if not checker.feed(row):
                break
        checker.finish()
        if checker.broken is not None:
            chain_breaks.append(checker.broken)
    heads_from = start.checkpoint_id if start is not None else 0
    breaks = chain_breaks + prune_breaks + breaks + check_checkpoints(checkpoints, checkers, keyring, restores, heads_from=heads_from)
    breaks += check_superseded(superseded, checkers, keyring) + _heads_checked(within, checkers)
    conflicts = await log.conflicts(prefix)
    breaks += [Break(topic=c.topic, partition=c.partition, seq=c.logged_seq, offset=c.kafka_offset, problem=c.problem()) for c in conflicts]
    breaks += verdict_breaks
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
        signatures_checked=rechecked if recheck is not None else None,
    )


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
