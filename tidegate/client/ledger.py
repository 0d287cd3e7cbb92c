"""What a governed tool has run, per idempotency key, so a redelivered or retried request never runs it twice."""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any, Protocol

from tidegate.client._private import private_file

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

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._db = sqlite3.connect(private_file(path), isolation_level=None)  # it holds the tool's replies: its owner's only
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
    """An action id already names another call (other tenant, task, tool or args): nothing of this call runs.

    Raised before anything is sent when this agent's ledger binds the id to another call; raised once the
    proposal was sent (`by_deployment`) when the policy's decision under that id is another call's (another
    tenant's, or other args): the policy refuses the proposal as `action_id_reused`, and the other call's
    answers are never taken for this one's.
    An idempotency key names one call. A provider that numbers its tool calls per turn ("call_0") needs
    them namespaced (with the thread, run or workflow run id) before they serve as action ids.
    """

    def __init__(self, action_id: str, *, by_deployment: bool = False) -> None:
        said = (
            f"action id {action_id!r} is another call's at the deployment (another tenant's, or other args): the policy "
            "refused this proposal as `action_id_reused`, and nothing of it runs"
            if by_deployment
            else f"action id {action_id!r} was already proposed for a different call (tenant, task, tool or args differ); "
            "nothing was proposed"
        )
        super().__init__(
            f"{said}. Give each call its own action id (namespace a model's call ids with the thread or run id), "
            "and resume an earlier call with the same task, tool and args."
        )
        self.action_id = action_id
        self.by_deployment = by_deployment


class ProposalLedger(Protocol):
    """Which action ids this agent already proposed, for which call, and where the answer topics stood then.

    A proposal is recorded before it is sent, together with the signed event, and marked `sent` once the
    broker acknowledged it. Until then `unsent` hands back that very event: a retry (or a restarted agent)
    sends it again instead of waiting on a proposal no service ever saw. Sending it twice is harmless:
    it is the same signed proposal under the same action id, which policy decides once.
    """

    def lookup(self, action_id: str) -> tuple[str, str | None] | None:
        """(position token, call digest) recorded with the proposal, or None when it was never proposed.

        The digest is None for a row written before digests were recorded.
        """
        ...

    def record(self, action_id: str, position: str, call: str, proposal: str, *, action_digest: str) -> None:
        """Record a proposal before it is sent.

        With it: its position, the digest of its call, the signed event as JSON, and its `action_digest`
        (tenant, tool, args: what the policy's decision of it carries).
        """
        ...

    def action_digest(self, action_id: str) -> str | None:
        """The `action_digest` recorded with the proposal: only a decision carrying it answers it.

        None when it was never proposed, or for a row written before digests were recorded.
        """
        ...

    def unsent(self, action_id: str) -> str | None:
        """The signed proposal recorded but never acknowledged by the broker, else None (sent, or never recorded)."""
        ...

    def sent(self, action_id: str) -> None:
        """Mark the proposal acknowledged by the broker."""
        ...

    def withdraw(self, action_id: str) -> None:
        """Forget a proposal the broker refused for good (too large): never sent, it can never be, so nothing of it stands.

        A proposal already acknowledged is kept.
        """
        ...


class MemoryProposals:
    """Proposals of this process's lifetime."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[str, str | None]] = {}
        self._unsent: dict[str, str] = {}
        self._digests: dict[str, str] = {}

    def lookup(self, action_id: str) -> tuple[str, str | None] | None:
        """See `ProposalLedger`."""
        return self._rows.get(action_id)

    def record(self, action_id: str, position: str, call: str, proposal: str, *, action_digest: str) -> None:
        """See `ProposalLedger`."""
        if action_id not in self._rows:
            self._rows[action_id] = (position, call)
            self._unsent[action_id] = proposal
            self._digests[action_id] = action_digest

    def action_digest(self, action_id: str) -> str | None:
        """See `ProposalLedger`."""
        return self._digests.get(action_id)

    def unsent(self, action_id: str) -> str | None:
        """See `ProposalLedger`."""
        return self._unsent.get(action_id)

    def sent(self, action_id: str) -> None:
        """See `ProposalLedger`."""
        self._unsent.pop(action_id, None)

    def withdraw(self, action_id: str) -> None:
        """See `ProposalLedger`."""
        if self._unsent.pop(action_id, None) is not None:
            del self._rows[action_id]
            self._digests.pop(action_id, None)


class SqliteProposals:
    """Proposals kept in a SQLite file, so a restarted agent never proposes the same action twice.

    `unsent` holds the signed event until the broker acknowledged it (NULL afterwards, and in rows of older files).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        # Its owner's only: it holds signed proposals with their args.
        self._db = sqlite3.connect(private_file(path), isolation_level=None, check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS proposals "
            "(action_id TEXT PRIMARY KEY, position TEXT NOT NULL, call TEXT, unsent TEXT, action_digest TEXT)"
        )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(proposals)")}
        if "call" not in columns:  # a file from before digests
            self._db.execute("ALTER TABLE proposals ADD COLUMN call TEXT")
        if "unsent" not in columns:  # a file from before resending: its rows count as sent, as they did then
            self._db.execute("ALTER TABLE proposals ADD COLUMN unsent TEXT")
        if "action_digest" not in columns:  # a file from before answers were matched to the call: its rows match by tenant only
            self._db.execute("ALTER TABLE proposals ADD COLUMN action_digest TEXT")

    def lookup(self, action_id: str) -> tuple[str, str | None] | None:
        """See `ProposalLedger`."""
        row = self._db.execute("SELECT position, call FROM proposals WHERE action_id = ?", (action_id,)).fetchone()
        return None if row is None else (str(row[0]), None if row[1] is None else str(row[1]))

    def record(self, action_id: str, position: str, call: str, proposal: str, *, action_digest: str) -> None:
        """See `ProposalLedger`."""
        self._db.execute(
            "INSERT OR IGNORE INTO proposals (action_id, position, call, unsent, action_digest) VALUES (?, ?, ?, ?, ?)",
            (action_id, position, call, proposal, action_digest),
        )

    def action_digest(self, action_id: str) -> str | None:
        """See `ProposalLedger`."""
        row = self._db.execute("SELECT action_digest FROM proposals WHERE action_id = ?", (action_id,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def unsent(self, action_id: str) -> str | None:
        """See `ProposalLedger`."""
        row = self._db.execute("SELECT unsent FROM proposals WHERE action_id = ?", (action_id,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def sent(self, action_id: str) -> None:
        """See `ProposalLedger`."""
        self._db.execute("UPDATE proposals SET unsent = NULL WHERE action_id = ?", (action_id,))

    def withdraw(self, action_id: str) -> None:
        """See `ProposalLedger`."""
        self._db.execute("DELETE FROM proposals WHERE action_id = ? AND unsent IS NOT NULL", (action_id,))

    def close(self) -> None:
        """Close the file."""
        self._db.close()
