"""`tidegate audit verify`: recompute every chain and check every checkpoint against it.

A row edited, deleted, inserted or moved breaks its chain (its hash, or the link to the row before
it). Rows cut off at the end of a chain leave the chain intact; only a signed checkpoint that names
a later head shows it. The first broken link of each chain is reported with where and what.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict

from servicekit import Keyring
from services.audit.checkpoints import Checkpoint, signature_valid, split_chain_name
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
        self.last_seq, self.last_hash, self.last_offset = row.seq, row.hash, row.kafka_offset
        return True


def _cp_break(cp: Checkpoint, problem: str) -> Break:
    return Break(topic="*", partition=-1, checkpoint_id=cp.checkpoint_id, problem=problem)


def check_checkpoints(checkpoints: Iterable[Checkpoint], checkers: dict[tuple[str, int], ChainChecker], keyring: Keyring) -> list[Break]:
    """Each checkpoint must be validly signed, and every head it signed must still be in its chain."""
    breaks: list[Break] = []
    previous: dict[str, int] = {}
    expected_id = 1
    for cp in checkpoints:
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
            seq, digest, offset = int(head["seq"]), str(head["hash"]), int(head["offset"])
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
            checker = checkers.get((topic, partition))
            if checker is not None and checker.broken is not None and checker.broken.seq is not None and checker.broken.seq <= seq:
                continue  # already reported as a broken link inside the chain
            row = checker.at.get(seq) if checker else None
            if row is None:
                end = checker.last_seq if checker else 0
                problem = (
                    f"signed head seq {seq} (offset {offset}) is missing: the chain ends at seq {end} "
                    f"(tail truncated: {seq - end} row(s) gone)"
                )
                breaks.append(
                    Break(topic=topic, partition=partition, seq=seq, offset=offset, checkpoint_id=cp.checkpoint_id, problem=problem)
                )
            elif row.hash.hex() != digest or row.kafka_offset != offset:
                breaks.append(
                    Break(
                        topic=topic,
                        partition=partition,
                        seq=seq,
                        offset=row.kafka_offset,
                        checkpoint_id=cp.checkpoint_id,
                        problem="row differs from the signed head (chain rewritten after the checkpoint)",
                    )
                )
    return breaks


async def verify_log(log: AuditLog, keyring: Keyring, *, prefix: str = "", extra_checkpoints: Iterable[Checkpoint] = ()) -> VerifyReport:
    """Recompute every chain of the deployment `prefix` and check its checkpoints.

    `extra_checkpoints` are copies kept elsewhere (the bus): one missing from or differing from
    the database is a break, and the copy is what the chains are checked against.
    """
    started = time.perf_counter()
    by_id = {cp.checkpoint_id: cp for cp in await log.checkpoints(prefix)}
    breaks: list[Break] = []
    for cp in extra_checkpoints:
        stored = by_id.get(cp.checkpoint_id)
        if stored is None:
            breaks.append(_cp_break(cp, "published on the bus but missing from the database"))
            by_id[cp.checkpoint_id] = cp
        elif (stored.heads, stored.rows, stored.signature) != (cp.heads, cp.rows, cp.signature):
            breaks.append(_cp_break(cp, "differs from the copy published on the bus"))
            by_id[cp.checkpoint_id] = cp  # the published copy is the one the attacker could not edit
    checkpoints = [by_id[k] for k in sorted(by_id)]
    wanted: dict[tuple[str, int], set[int]] = {}
    for cp in checkpoints:
        for name, head in cp.heads.items():
            wanted.setdefault(split_chain_name(name), set()).add(int(head["seq"]))
    checkers: dict[tuple[str, int], ChainChecker] = {}
    chain_breaks: list[Break] = []
    for topic, partition in await log.chains(prefix):
        checker = ChainChecker(topic, partition, wanted=wanted.get((topic, partition), set()))
        checkers[(topic, partition)] = checker
        async for row in log.chain_rows(topic, partition):
            if not checker.feed(row):
                break
        if checker.broken is not None:
            chain_breaks.append(checker.broken)
    breaks = chain_breaks + breaks + check_checkpoints(checkpoints, checkers, keyring)
    return VerifyReport(
        rows=sum(c.rows for c in checkers.values()),
        chains=len(checkers),
        checkpoints=len(checkpoints),
        seconds=time.perf_counter() - started,
        breaks=breaks,
    )
