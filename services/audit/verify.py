"""`tidegate audit verify`: recompute every chain and check every checkpoint against it.

A row edited, deleted, inserted or moved breaks its chain (its hash, or the link to the row before
it). Rows cut off at the end of a chain leave the chain intact; only a signed checkpoint that names
a later head shows it. The first broken link of each chain is reported with where and what.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from servicekit import Keyring
from services.audit.checkpoints import Checkpoint, Restore, signature_valid, split_chain_name
from services.audit.records import GENESIS, LogRow
from services.audit.repository import AuditLog

__all__ = ["Break", "ChainChecker", "VerifyReport", "verify_log"]


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
    # Offset windows (after, through] a checkpoint superseded by a restore signed past the restored head, and the rows found in each.
    windows: dict[tuple[int, int], int] = field(default_factory=dict)
    rows: int = 0
    last_seq: int = 0
    last_hash: bytes = GENESIS
    last_offset: int = -1
    at: dict[int, LogRow] = field(default_factory=dict)
    broken: Break | None = None

    def _break(self, row: LogRow, problem: str) -> None:
        self.broken = Break(topic=self.topic, partition=self.partition, seq=row.seq, offset=row.kafka_offset, problem=problem)

    def feed(self, row: LogRow) -> bool:
        """Check the next row; False once the chain is broken (later rows prove nothing more)."""
        if self.broken is not None:
            return False
        self.rows += 1
        expected_seq = self.last_seq + 1
        if row.seq != expected_seq:
            gap = f"seq {expected_seq}" if row.seq == expected_seq + 1 else f"seq {expected_seq}..{row.seq - 1}"
            self._break(row, f"{gap} missing: the row before this one is seq {self.last_seq} (rows deleted?)")
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


def _cp_break(cp: Checkpoint, problem: str) -> Break:
    return Break(topic="*", partition=-1, checkpoint_id=cp.checkpoint_id, problem=problem)


def check_checkpoints(
    checkpoints: Iterable[Checkpoint], checkers: dict[tuple[str, int], ChainChecker], keyring: Keyring, restores: Iterable[Restore] = ()
) -> list[Break]:
    """Each checkpoint must be validly signed, and every head it signed must still be in its chain.

    The ids run on without a gap, except the ones a restore superseded (`Restore`).
    """
    breaks: list[Break] = []
    previous: dict[str, int] = {}
    expected_id = 1
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
            if (found := _head_break(cp.checkpoint_id, name, head, checkers)) is not None:
                breaks.append(found)
    return breaks


def _head_break(checkpoint_id: int, name: str, head: dict[str, Any], checkers: dict[tuple[str, int], ChainChecker]) -> Break | None:
    """What is wrong with the row a checkpoint signed as the head `name` (None: it is in its chain, unchanged)."""
    topic, partition = split_chain_name(name)
    seq, digest, offset = int(head["seq"]), str(head["hash"]), int(head["offset"])
    checker = checkers.get((topic, partition))
    if checker is not None and checker.broken is not None and checker.broken.seq is not None and checker.broken.seq <= seq:
        return None  # already reported as a broken link inside the chain
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


async def verify_log(log: AuditLog, keyring: Keyring, *, prefix: str = "", extra_checkpoints: Iterable[Checkpoint] = ()) -> VerifyReport:
    """Recompute every chain of the deployment `prefix` and check its checkpoints.

    `extra_checkpoints` are copies kept elsewhere (the bus): one missing from or differing from
    the database is a break, and the copy is what the chains are checked against.
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
    for topic, partition in await log.chains(prefix):
        tp = (topic, partition)
        checker = ChainChecker(topic, partition, wanted=wanted.get(tp, set()), windows=windows.get(tp, {}))
        checkers[(topic, partition)] = checker
        async for row in log.chain_rows(topic, partition):
            if not checker.feed(row):
                break
        if checker.broken is not None:
            chain_breaks.append(checker.broken)
    breaks = chain_breaks + breaks + check_checkpoints(checkpoints, checkers, keyring, restores)
    breaks += check_superseded(superseded, checkers, keyring) + _heads_checked(within, checkers)
    return VerifyReport(
        rows=sum(c.rows for c in checkers.values()),
        chains=len(checkers),
        checkpoints=len(checkpoints),
        seconds=time.perf_counter() - started,
        breaks=breaks,
    )
