"""What a governed tool has run, per idempotency key, so a redelivered or retried request never runs it twice."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Protocol

__all__ = ["ActionIdReused", "CallLedger", "MemoryLedger", "MemoryProposals", "ProposalLedger", "SqliteLedger", "SqliteProposals"]


class CallLedger(Protocol):
    """`begin` before running, `finish` with the reply; a key begun but never finished means the outcome is unknown."""

    def lookup(self, key: str) -> tuple[bool, dict[str, Any] | None]:
        """(begun, reply): (False, None) never seen; (True, None) begun, not finished; (True, reply) answered."""
        ...

    def begin(self, key: str) -> None:
        """Record that the call is about to run."""
        ...

    def finish(self, key: str, reply: dict[str, Any]) -> None:
        """Record the reply that was (or is about to be) sent."""
        ...


class MemoryLedger:
    """For tests and tools whose process never restarts."""

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, Any] | None] = {}

    def lookup(self, key: str) -> tuple[bool, dict[str, Any] | None]:
        """See `CallLedger`."""
        return (key in self._rows, self._rows.get(key))

    def begin(self, key: str) -> None:
        """See `CallLedger`."""
        self._rows.setdefault(key, None)

    def finish(self, key: str, reply: dict[str, Any]) -> None:
        """See `CallLedger`."""
        self._rows[key] = reply


class SqliteLedger:
    """One SQLite file; each write is committed before the call runs or the reply is sent."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, reply TEXT)")

    def lookup(self, key: str) -> tuple[bool, dict[str, Any] | None]:
        """See `CallLedger`."""
        row = self._db.execute("SELECT reply FROM calls WHERE key = ?", (key,)).fetchone()
        if row is None:
            return (False, None)
        return (True, json.loads(row[0]) if row[0] is not None else None)

    def begin(self, key: str) -> None:
        """See `CallLedger`."""
        self._db.execute("INSERT OR IGNORE INTO calls (key, reply) VALUES (?, NULL)", (key,))

    def finish(self, key: str, reply: dict[str, Any]) -> None:
        """See `CallLedger`."""
        self._db.execute("UPDATE calls SET reply = ? WHERE key = ?", (json.dumps(reply), key))

    def close(self) -> None:
        """Close the file."""
        self._db.close()


class ActionIdReused(ValueError):
    """An action id already names another call (other tenant, task, tool or args): nothing was proposed.

    An idempotency key names one call. A provider that numbers its tool calls per turn ("call_0") needs
    them namespaced (with the thread, run or workflow run id) before they serve as action ids.
    """

    def __init__(self, action_id: str) -> None:
        super().__init__(
            f"action id {action_id!r} was already proposed for a different call (tenant, task, tool or args differ); "
            "nothing was proposed. Give each call its own action id (namespace a model's call ids with the thread or run id), "
            "and resume an earlier call with the same task, tool and args."
        )
        self.action_id = action_id


class ProposalLedger(Protocol):
    """Which action ids this agent already proposed, for which call, and where the answer topics stood then."""

    def lookup(self, action_id: str) -> tuple[str, str | None] | None:
        """(position token, call digest) recorded with the proposal, or None when it was never proposed.

        The digest is None for a row written before digests were recorded.
        """
        ...

    def record(self, action_id: str, position: str, call: str) -> None:
        """Record a proposal (its position and the digest of its call) before it is sent."""
        ...


class MemoryProposals:
    """Proposals of this process's lifetime."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[str, str | None]] = {}

    def lookup(self, action_id: str) -> tuple[str, str | None] | None:
        """See `ProposalLedger`."""
        return self._rows.get(action_id)

    def record(self, action_id: str, position: str, call: str) -> None:
        """See `ProposalLedger`."""
        self._rows.setdefault(action_id, (position, call))


class SqliteProposals:
    """Proposals kept in a SQLite file, so a restarted agent never proposes the same action twice."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS proposals (action_id TEXT PRIMARY KEY, position TEXT NOT NULL, call TEXT)")
        if "call" not in {row[1] for row in self._db.execute("PRAGMA table_info(proposals)")}:  # a file from before digests
            self._db.execute("ALTER TABLE proposals ADD COLUMN call TEXT")

    def lookup(self, action_id: str) -> tuple[str, str | None] | None:
        """See `ProposalLedger`."""
        row = self._db.execute("SELECT position, call FROM proposals WHERE action_id = ?", (action_id,)).fetchone()
        return None if row is None else (str(row[0]), None if row[1] is None else str(row[1]))

    def record(self, action_id: str, position: str, call: str) -> None:
        """See `ProposalLedger`."""
        self._db.execute("INSERT OR IGNORE INTO proposals (action_id, position, call) VALUES (?, ?, ?)", (action_id, position, call))

    def close(self) -> None:
        """Close the file."""
        self._db.close()
