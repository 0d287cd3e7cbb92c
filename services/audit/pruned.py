"""What `audit show`/`explain` say of a task the log no longer holds (or holds only the end of): the prune that took it.

After `tidegate audit archive --prune` the rows before a signed checkpoint live only in the archive file. A task id
the log has no record of may be a typo or a task pruned away, and a task whose `task.submitted` is missing may have
begun before the prune: `pruned_before` finds the newest prune, what it says points at the archive, and
`with_archives` reads a task's rows back out of archives, so its story is told from them and the live log's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from services.audit.archive import read_archive
from services.audit.repository import AuditLog, InMemoryAuditLog

__all__ = ["PrunedBefore", "pruned_before", "with_archives"]


class PrunedBefore(BaseModel):
    """The newest prune of a deployment's log: every record before `before` left the database for an archive."""

    model_config = ConfigDict(frozen=True)

    checkpoint_id: int
    before: datetime
    rows_removed: int
    archive_sha256: str
    pruned_at: datetime
    pruned_by: str

    def _where(self) -> str:
        return (
            f"the log before {self.before:%Y-%m-%d %H:%M:%S} UTC (checkpoint {self.checkpoint_id}) was archived and pruned "
            f"by {self.pruned_by} at {self.pruned_at:%Y-%m-%d %H:%M:%S} UTC ({self.rows_removed} rows; "
            f"the archive's sha256 {self.archive_sha256[:16]}…, the file `tidegate audit archive --out` wrote)"
        )

    def not_found(self, ident: str) -> str:
        """What to say of an id the log has no record of: it may be a task older than the prune."""
        return (
            f"{self._where()}: if {ident!r} is older, its records are in that archive: "
            f"`tidegate audit explain {ident} --archive FILE` reads them (`tidegate audit verify --archive FILE` checks the file)"
        )

    def start_missing(self, ident: str) -> str:
        """What to say of a task whose `task.submitted` the log lacks: its start may have been pruned."""
        return (
            f"task {ident!r} has no task.submitted in the log, and {self._where()}: if it began before then, its start was "
            f"pruned and is in that archive: `tidegate audit explain {ident} --archive FILE` tells it whole"
        )


async def pruned_before(log: AuditLog, prefix: str) -> PrunedBefore | None:
    """The newest prune of the deployment `prefix`'s log, with when its checkpoint was taken; None when it was never pruned."""
    prunes = await log.prunes(prefix)
    if not prunes:
        return None
    last = prunes[-1]
    taken = {cp.checkpoint_id: cp.taken_at for cp in await log.checkpoints(prefix)}
    before = taken.get(last.checkpoint_id, last.pruned_at)
    return PrunedBefore(before=before, **last.model_dump())


async def with_archives(log: AuditLog, paths: Sequence[Path], task_id: str, prefix: str) -> AuditLog:
    """A log of `task_id`'s rows (in the deployment `prefix`): those the archives at `paths` hold, and those `log` still holds.

    Each row once: a prune keeps each chain's head row, which its archive holds too (a row is one topic, partition, seq).
    What reads a task from a log (`explain_task`, `task_rows_of`) reads it whole from this one.

    Raises:
        ArchiveError: A file is not an audit archive, or a line of it is not a row.
    """
    key = task_id.encode()
    found = {(r.topic, r.partition, r.seq): r for r in await log.task_rows(task_id, prefix)}
    for path in paths:
        _, rows = read_archive(path)
        for _, row in rows:
            if row.topic.startswith(prefix) and (row.task_id == task_id or (row.task_id is None and row.key == key)):
                found.setdefault((row.topic, row.partition, row.seq), row)
    return InMemoryAuditLog(rows=list(found.values()))
