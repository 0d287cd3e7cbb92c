"""The one abstract base of the audit log (`AuditLog`), which its PostgreSQL implementation and its in-memory twin subclass.

It holds what both share: the methods each must have (abstract, so neither can leave one out), the search
filters with their in-memory match, the order of a task's story, and how a batch is split into chains.
The implementations: `_pg_append`, `_pg_reads`, `_pg_checkpoints`, `_pg_conflicts` (composed by
`repository.PostgresAuditLog`) and `_memory_log.InMemoryAuditLog`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from services.audit.acknowledgements import Acknowledgement
from services.audit.chain import AppendResult, Head, RecordedConflict
from services.audit.checkpoints import Checkpoint, Prune, Restore, UnreadableCheckpoint
from services.audit.rows import Fingerprint, LogRow, Observed

__all__ = ["AuditLog", "SearchFilters", "batch_ranges", "story_key"]


@dataclass(frozen=True)
class SearchFilters:
    """What `tidegate audit search` can filter on; every field is optional and they combine with AND."""

    tenant: str | None = None
    tool: str | None = None
    outcome: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    trace_id: str | None = None
    task_id: str | None = None
    event_type: str | None = None
    action_id: str | None = None
    topic_prefix: str = ""
    include_duplicates: bool = False
    valid: bool | None = None  # False: only the records stored as not valid events (`tidegate audit search --invalid`)

    def matches(self, row: LogRow) -> bool:
        """The in-memory equivalent of the SQL filter."""
        return (
            (self.tenant is None or row.tenant_id == self.tenant)
            and (self.tool is None or row.tool == self.tool)
            and (self.outcome is None or row.outcome == self.outcome)
            and (self.reason is None or self.reason in row.reasons)
            and (self.since is None or row.kafka_ts >= self.since)
            and (self.until is None or row.kafka_ts < self.until)
            and (self.trace_id is None or row.trace_id == self.trace_id)
            and (self.task_id is None or row.task_id == self.task_id)
            and (self.event_type is None or row.event_type == self.event_type)
            and (self.action_id is None or row.action_id == self.action_id)
            and (self.valid is None or row.valid == self.valid)
            and row.topic.startswith(self.topic_prefix)
            and (self.include_duplicates or not row.duplicate)
        )


def story_key(row: LogRow) -> tuple[Any, ...]:
    """Order of a task's story: Kafka time, then event time, then position."""
    return (row.kafka_ts, row.event_time or row.kafka_ts, row.topic, row.partition, row.kafka_offset)


class AuditLog(Protocol):
    """The append-only log and its checkpoints: the abstract base of `PostgresAuditLog` and `InMemoryAuditLog`."""

    @abstractmethod
    async def append(self, records: Sequence[Observed]) -> AppendResult:
        """Append `records` (in Kafka order per partition) in one transaction; skip positions already logged."""
        ...

    @abstractmethod
    async def heads(self, prefix: str = "") -> dict[tuple[str, int], Head]:
        """The head of every chain whose topic starts with `prefix`."""
        ...

    @abstractmethod
    async def latest_checkpoint(self, scope: str = "") -> Checkpoint | None:
        """The checkpoint of `scope` (a topic prefix) with the highest id, if any, of the rows that read as checkpoints."""
        ...

    @abstractmethod
    def newest_first(self, scope: str = "") -> AsyncIterator[Checkpoint | UnreadableCheckpoint]:
        """Every row of `scope`'s checkpoints, highest id first, each read as a checkpoint or refused as not one."""
        ...

    @abstractmethod
    async def checkpoint(self, scope: str, checkpoint_id: int) -> Checkpoint | UnreadableCheckpoint | None:
        """The row of `scope` with id `checkpoint_id`, read as a checkpoint or refused as not one; None: no row has that id."""
        ...

    @abstractmethod
    async def add_checkpoint(self, checkpoint: Checkpoint) -> bool:
        """Store a checkpoint; False if its id is taken in its scope (another copy of the service got there first)."""
        ...

    @abstractmethod
    async def checkpoints(self, scope: str = "") -> list[Checkpoint]:
        """Every checkpoint of `scope`, by id: the rows that read as checkpoints (their signatures are the reader's to check)."""
        ...

    @abstractmethod
    async def unreadable_checkpoints(self, scope: str = "") -> list[UnreadableCheckpoint]:
        """The rows of `scope`'s checkpoints that do not read as checkpoints (written by someone else), by id."""
        ...

    @abstractmethod
    async def add_restore(self, checkpoint: Checkpoint, *, superseded_from: int) -> bool:
        """Store the checkpoint of a restore and the restore, together (`Restore`); False if the id is taken (as `add_checkpoint`)."""
        ...

    @abstractmethod
    async def restores(self, scope: str = "") -> list[Restore]:
        """Every restore of `scope`, by checkpoint id."""
        ...

    @abstractmethod
    async def chains(self, prefix: str = "") -> list[tuple[str, int]]:
        """Every (topic, partition) whose topic starts with `prefix` and that has rows."""
        ...

    @abstractmethod
    def chain_rows(self, topic: str, partition: int, first: int = 1, last: int | None = None) -> AsyncIterator[LogRow]:
        """Rows of one chain in seq order, from seq `first` through `last` (None: to the head)."""
        ...

    @abstractmethod
    async def prunes(self, scope: str = "") -> list[Prune]:
        """Every prune of `scope`, by checkpoint id (`Prune`)."""
        ...

    @abstractmethod
    async def prune(self, scope: str, checkpoint_id: int, archive_sha256: str, expected_rows: int) -> int:
        """Remove every row before the heads checkpoint `checkpoint_id` signed, in one transaction, and record it; the rows removed.

        Refused (nothing removed) when the count differs from `expected_rows`, a head row is not the one signed,
        or the log is already pruned through that checkpoint.
        """
        ...

    @abstractmethod
    async def row_at(self, topic: str, partition: int, offset: int) -> LogRow | None:
        """The row of the record at `topic[partition]@offset`, if the log holds it (what a dead letter names)."""
        ...

    @abstractmethod
    async def task_rows(self, task_id: str, prefix: str = "") -> list[LogRow]:
        """Every row about a task (its events, and records keyed by it) in the deployment `prefix`, in story order."""
        ...

    @abstractmethod
    async def search(self, filters: SearchFilters, *, limit: int = 100, newest: bool = False) -> list[LogRow]:
        """Rows matching `filters`, oldest first, at most `limit`: the oldest that match, or with `newest` the newest."""
        ...

    @abstractmethod
    async def offset_gaps(self, topic: str, partition: int, begin: int, end: int) -> list[tuple[int, int]]:
        """The offsets of [begin, end) with no row, as (first, last) ranges, inclusive and in order."""
        ...

    @abstractmethod
    async def count(self) -> int:
        """Rows in the log."""
        ...

    @abstractmethod
    async def unflagged_event_ids(self, event_ids: Sequence[str]) -> set[str]:
        """Those of `event_ids` a valid row not flagged `duplicate` holds, anywhere in the log (what a duplicate duplicates)."""
        ...

    @abstractmethod
    async def conflicts(self, prefix: str = "") -> list[RecordedConflict]:
        """Every conflict recorded in the deployment `prefix` (`chain.Conflict`), by position."""
        ...

    @abstractmethod
    def fingerprints(self, topic: str, partition: int, first_offset: int) -> AsyncIterator[tuple[int, int, Fingerprint]]:
        """(offset, seq, fingerprint) of each row of one chain from offset `first_offset` on, in offset order."""
        ...

    @abstractmethod
    async def acknowledgements(self, prefix: str = "") -> list[Acknowledgement]:
        """Every acknowledgement of a conflict stored in the deployment `prefix` (`acknowledgements.py`), verified or not."""
        ...

    @abstractmethod
    async def add_acknowledgement(self, ack: Acknowledgement) -> None:
        """Store an operator's acknowledgement of a conflict (the operator's login: the service's may not)."""
        ...


def batch_ranges(records: Sequence[Observed]) -> dict[tuple[str, int], tuple[int, int]]:
    """The first and last offset of each chain a batch reaches."""
    ranges: dict[tuple[str, int], tuple[int, int]] = {}
    for r in records:
        tp = (r.topic, r.partition)
        first, last = ranges.get(tp, (r.kafka_offset, r.kafka_offset))
        ranges[tp] = (min(first, r.kafka_offset), max(last, r.kafka_offset))
    return ranges
