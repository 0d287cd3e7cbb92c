"""The chain walk of `tidegate audit verify`: each chain's rows in seq order, and its first broken link.

A row edited, deleted, inserted or moved breaks its chain (its hash, or the link to the row before it). A chain
may be checked from a signed head on (its anchor: after a prune, or on request); the anchor row must be the one
signed, unchanged. `Break` is how every check of verify names what is wrong, and where.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict

from services.audit.chain import Head
from services.audit.rows import GENESIS, LogRow

__all__ = ["Break", "ChainChecker"]


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
        """One line for a person: a break of the whole log (`*`) or of a file (partition -1) names no partition."""
        where = "" if self.topic == "*" else (self.topic if self.partition < 0 else f"{self.topic}[{self.partition}]")
        if self.seq is not None:
            where += f" seq {self.seq}"
        if self.offset is not None:
            where += f" (offset {self.offset})"
        if self.checkpoint_id is not None:
            where += f"{', ' if where else ''}checkpoint {self.checkpoint_id}"
        return f"{where}: {self.problem}" if where else self.problem


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
