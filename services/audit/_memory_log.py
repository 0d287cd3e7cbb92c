"""The in-memory twin of the audit log (`InMemoryAuditLog`): same chaining, same dedup, no database.

It subclasses the one abstract base (`_log_base.AuditLog`) that the PostgreSQL implementation subclasses, and
plays in Python what that one does in SQL (`audit.prune_log`'s checks, `SearchFilters.matches` for the search's
WHERE). Unit tests run the service, verify, explain and search on it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.audit._log_base import AuditLog, SearchFilters, batch_ranges, story_key
from services.audit.acknowledgements import Acknowledgement
from services.audit.chain import AppendResult, Conflict, Head, Logged, RecordedConflict, chain_batch
from services.audit.checkpoints import Checkpoint, Prune, Restore, UnreadableCheckpoint, chain_name, split_chain_name
from services.audit.rows import Fingerprint, LogRow, Observed

__all__ = ["InMemoryAuditLog"]


@dataclass
class InMemoryAuditLog(AuditLog):
    """The twin used by unit tests: same chaining, same dedup, no database."""

    rows: list[LogRow] = field(default_factory=list)
    stored_checkpoints: dict[tuple[str, int], Checkpoint] = field(default_factory=dict)
    unreadable_rows: dict[tuple[str, int], UnreadableCheckpoint] = field(default_factory=dict)
    """Rows of the checkpoints table that do not read as checkpoints (a test puts them there, as the database's login would)."""
    stored_restores: dict[tuple[str, int], Restore] = field(default_factory=dict)
    stored_prunes: dict[tuple[str, int], Prune] = field(default_factory=dict)
    stored_conflicts: dict[tuple[str, int, int, bytes], RecordedConflict] = field(default_factory=dict)
    stored_acks: list[Acknowledgement] = field(default_factory=list)
    fail_next: list[BaseException] = field(default_factory=list)

    async def append(self, records: Sequence[Observed]) -> AppendResult:
        """See `AuditLog`."""
        if self.fail_next:
            raise self.fail_next.pop(0)
        known = {r.event_id for r in self.rows if r.valid and not r.duplicate and r.event_id}
        heads = await self.heads()
        logged = {}
        for tp, (first, last) in batch_ranges(records).items():
            if tp in heads and first <= heads[tp].offset:
                chain = [r for r in self.rows if (r.topic, r.partition) == tp]
                held = {r.kafka_offset: (r.seq, Fingerprint.of(r)) for r in chain if first <= r.kafka_offset <= last}
                logged[tp] = Logged(min(chain, key=lambda r: r.seq).kafka_offset, held)
        result = chain_batch(records, heads, known, datetime.now(UTC), logged)
        self.rows.extend(result.rows)
        for c in result.conflicts:
            recorded = _recorded(c, datetime.now(UTC))
            self.stored_conflicts.setdefault((c.record.topic, c.record.partition, c.record.kafka_offset, recorded.record_sha256), recorded)
        return result

    async def conflicts(self, prefix: str = "") -> list[RecordedConflict]:
        """See `AuditLog`."""
        return [c for _, c in sorted(self.stored_conflicts.items()) if c.topic.startswith(prefix)]

    async def acknowledgements(self, prefix: str = "") -> list[Acknowledgement]:
        """See `AuditLog`."""
        return [a for a in self.stored_acks if a.topic.startswith(prefix)]

    async def add_acknowledgement(self, ack: Acknowledgement) -> None:
        """See `AuditLog`."""
        self.stored_acks.append(ack)

    async def fingerprints(self, topic: str, partition: int, first_offset: int) -> AsyncIterator[tuple[int, int, Fingerprint]]:
        """See `AuditLog`."""
        mine = (r for r in self.rows if r.topic == topic and r.partition == partition and r.kafka_offset >= first_offset)
        for r in sorted(mine, key=lambda r: r.kafka_offset):
            yield r.kafka_offset, r.seq, Fingerprint.of(r)

    async def heads(self, prefix: str = "") -> dict[tuple[str, int], Head]:
        """See `AuditLog`."""
        heads: dict[tuple[str, int], Head] = {}
        for r in self.rows:
            if not r.topic.startswith(prefix):
                continue
            tp = (r.topic, r.partition)
            if tp not in heads or heads[tp].seq < r.seq:
                heads[tp] = Head(r.seq, r.hash, r.kafka_offset)
        return heads

    async def latest_checkpoint(self, scope: str = "") -> Checkpoint | None:
        """See `AuditLog`."""
        mine = await self.checkpoints(scope)
        return mine[-1] if mine else None

    async def newest_first(self, scope: str = "") -> AsyncIterator[Checkpoint | UnreadableCheckpoint]:
        """See `AuditLog`."""
        for key in sorted({*self.stored_checkpoints, *self.unreadable_rows}, reverse=True):
            if key[0] == scope:
                yield self.stored_checkpoints.get(key) or self.unreadable_rows[key]

    async def checkpoint(self, scope: str, checkpoint_id: int) -> Checkpoint | UnreadableCheckpoint | None:
        """See `AuditLog`."""
        return self.stored_checkpoints.get((scope, checkpoint_id)) or self.unreadable_rows.get((scope, checkpoint_id))

    async def add_checkpoint(self, checkpoint: Checkpoint) -> bool:
        """See `AuditLog`."""
        key = (checkpoint.scope, checkpoint.checkpoint_id)
        if key in self.stored_checkpoints or key in self.unreadable_rows:
            return False
        self.stored_checkpoints[key] = checkpoint
        return True

    async def checkpoints(self, scope: str = "") -> list[Checkpoint]:
        """See `AuditLog`."""
        return [cp for key, cp in sorted(self.stored_checkpoints.items()) if key[0] == scope]

    async def unreadable_checkpoints(self, scope: str = "") -> list[UnreadableCheckpoint]:
        """See `AuditLog`."""
        return [cp for key, cp in sorted(self.unreadable_rows.items()) if key[0] == scope]

    async def add_restore(self, checkpoint: Checkpoint, *, superseded_from: int) -> bool:
        """See `AuditLog`."""
        if not await self.add_checkpoint(checkpoint):
            return False
        restore = Restore(checkpoint_id=checkpoint.checkpoint_id, superseded_from=superseded_from)
        self.stored_restores[(checkpoint.scope, checkpoint.checkpoint_id)] = restore
        return True

    async def restores(self, scope: str = "") -> list[Restore]:
        """See `AuditLog`."""
        return [r for key, r in sorted(self.stored_restores.items()) if key[0] == scope]

    async def chains(self, prefix: str = "") -> list[tuple[str, int]]:
        """See `AuditLog`."""
        return sorted({(r.topic, r.partition) for r in self.rows if r.topic.startswith(prefix)})

    async def chain_rows(self, topic: str, partition: int, first: int = 1, last: int | None = None) -> AsyncIterator[LogRow]:
        """See `AuditLog`."""
        mine = (
            r for r in self.rows if r.topic == topic and r.partition == partition and first <= r.seq and (last is None or r.seq <= last)
        )
        for r in sorted(mine, key=lambda r: r.seq):
            yield r

    async def prunes(self, scope: str = "") -> list[Prune]:
        """See `AuditLog`."""
        return [p for key, p in sorted(self.stored_prunes.items()) if key[0] == scope]

    async def prune(self, scope: str, checkpoint_id: int, archive_sha256: str, expected_rows: int) -> int:
        """See `AuditLog` (the checks of `audit.prune_log`, in memory)."""
        cp = self.stored_checkpoints.get((scope, checkpoint_id))
        if cp is None:
            raise LookupError(f"no checkpoint {checkpoint_id} in scope {scope!r}")
        if any(key[0] == scope and key[1] >= checkpoint_id for key in self.stored_prunes):
            raise ValueError(f"the log of scope {scope!r} is already pruned through checkpoint {checkpoint_id} or later")
        below = {split_chain_name(name): int(head["seq"]) for name, head in cp.heads.items()}
        for (topic, partition), seq in below.items():
            signed = bytes.fromhex(cp.heads[chain_name(topic, partition)]["hash"])
            if not any(r.topic == topic and r.partition == partition and r.seq == seq and r.hash == signed for r in self.rows):
                raise ValueError(f"the row at {topic}[{partition}] seq {seq} is not the head checkpoint {checkpoint_id} signed")
        kept = [r for r in self.rows if r.seq >= below.get((r.topic, r.partition), 0)]
        removed = len(self.rows) - len(kept)
        if removed != expected_rows:
            raise ValueError(f"the prune would remove {removed} rows, the archive read {expected_rows}")
        self.rows = kept
        self.stored_prunes[(scope, checkpoint_id)] = Prune(
            checkpoint_id=checkpoint_id,
            rows_removed=removed,
            archive_sha256=archive_sha256,
            pruned_at=datetime.now(UTC),
            pruned_by="memory",
        )
        return removed

    async def row_at(self, topic: str, partition: int, offset: int) -> LogRow | None:
        """See `AuditLog`."""
        return next((r for r in self.rows if (r.topic, r.partition, r.kafka_offset) == (topic, partition, offset)), None)

    async def task_rows(self, task_id: str, prefix: str = "") -> list[LogRow]:
        """See `AuditLog`."""
        key = task_id.encode()
        mine = (r for r in self.rows if r.topic.startswith(prefix) and (r.task_id == task_id or (r.task_id is None and r.key == key)))
        return sorted(mine, key=story_key)

    async def search(self, filters: SearchFilters, *, limit: int = 100, newest: bool = False) -> list[LogRow]:
        """See `AuditLog`."""
        found = sorted((r for r in self.rows if filters.matches(r)), key=story_key)
        return found[-limit:] if newest else found[:limit]

    async def offset_gaps(self, topic: str, partition: int, begin: int, end: int) -> list[tuple[int, int]]:
        """See `AuditLog`."""
        have = sorted(
            {r.kafka_offset for r in self.rows if r.topic == topic and r.partition == partition and begin <= r.kafka_offset < end}
        )
        gaps, expected = [], begin
        for offset in [*have, end]:
            if offset > expected:
                gaps.append((expected, offset - 1))
            expected = offset + 1
        return gaps

    async def unflagged_event_ids(self, event_ids: Sequence[str]) -> set[str]:
        """See `AuditLog`."""
        wanted = set(event_ids)
        return {r.event_id for r in self.rows if r.valid and not r.duplicate and r.event_id is not None and r.event_id in wanted}

    async def count(self) -> int:
        """See `AuditLog`."""
        return len(self.rows)


def _recorded(c: Conflict, detected_at: datetime) -> RecordedConflict:
    r = c.record
    return RecordedConflict(
        topic=r.topic, partition=r.partition, kafka_offset=r.kafka_offset, logged_seq=c.seq, differs=list(c.differs),
        record_sha256=Fingerprint.of(r).digest(), detected_at=detected_at,
    )  # fmt: skip
