"""Which task each action the gateway proposed belongs to, and which calls still wait for their answer.

The client binds an action id to its call (tenant, task, tool, args), and the gateway proposes each MCP
session's calls under a task of that session (`sessions`). A call retried under its action id after a restart
(or through another gateway sharing the state dir, or from another session) is proposed under the task it was
first proposed in; under another task it would be another call, refused as `action_id_reused`.

A call is open from its proposal until its caller is answered. When the caller is gone unanswered (the
call was cancelled, or the gateway process holding it died or stopped), the same call (tenant, tool, args)
made again without an action id follows that proposal instead of proposing it twice: a gateway restarted
while a human decided does not ask them again. A call whose gateway is alive and still waiting on it is
never taken over (each process holds a lock of its own while it runs: a dead one's is free).

A call answered without its outcome (a pending result: a human decides, the decision is late, the bus was down) is
owed that outcome: the same call (tool and args) made again in the same task (`sessions`) without an action id follows
it, as does one made while the first still waits here, until an answer (that call's, or `tidegate_action_status`'s)
gives how it ended. A model that repeats a call waiting for a human does not open a second approval, nor pay twice.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import uuid
from typing import Protocol

from tidegate.client._private import private_dir, private_file

__all__ = ["ActionTasks", "MemoryActionTasks", "SqliteActionTasks", "StateOfAnotherTenant"]


class ActionTasks(Protocol):
    """The task of each action id the gateway proposed, and the calls whose callers wait, or left unanswered."""

    def bind(self, action_id: str, task_id: str) -> str:
        """The task `action_id` belongs to: the one bound first, else `task_id`, bound now."""
        ...

    def hold(self, action_id: str, call: str) -> None:
        """A caller of this gateway waits on `action_id`, a proposal of `call` (the call's `action_digest`)."""
        ...

    def answered(self, action_id: str, *, owed: bool = False) -> None:
        """Its caller was answered: with how it ended (the same call made later is a call of its own), or not (`owed`).

        Owed (a pending result, the bus unreachable): the same call of its task made again follows it (`following`).
        """
        ...

    def following(self, call: str, task_id: str) -> str | None:
        """An action of `call` in `task_id` still waited on here, or answered without how it ended; None when there is none."""
        ...

    def left(self, action_id: str) -> None:
        """Its caller is gone unanswered (the call was cancelled, the gateway stops): the same call made again follows it."""
        ...

    def orphan(self, call: str) -> str | None:
        """An action of `call` whose caller is gone unanswered, now held by this gateway; None when there is none."""
        ...


class MemoryActionTasks:
    """For a gateway whose process never restarts (and tests)."""

    def __init__(self) -> None:
        self._tasks: dict[str, str] = {}
        self._open: dict[str, tuple[str, bool]] = {}  # action id → (call, a caller waits on it)
        self._owed: dict[str, str] = {}  # action id → call, answered without how it ended

    def bind(self, action_id: str, task_id: str) -> str:
        """See `ActionTasks`."""
        return self._tasks.setdefault(action_id, task_id)

    def hold(self, action_id: str, call: str) -> None:
        """See `ActionTasks`."""
        self._open[action_id] = (call, True)

    def answered(self, action_id: str, *, owed: bool = False) -> None:
        """See `ActionTasks`."""
        call = self._open.pop(action_id, (None, False))[0]
        if owed and call is not None:
            self._owed[action_id] = call
        elif not owed:
            self._owed.pop(action_id, None)

    def following(self, call: str, task_id: str) -> str | None:
        """See `ActionTasks`."""
        waited = [a for a, (of, waited_on) in self._open.items() if of == call and waited_on]
        for action_id in [*waited, *(a for a, of in self._owed.items() if of == call)]:
            if self._tasks.get(action_id) == task_id:
                return action_id
        return None

    def left(self, action_id: str) -> None:
        """See `ActionTasks`."""
        if action_id in self._open:
            self._open[action_id] = (self._open[action_id][0], False)

    def orphan(self, call: str) -> str | None:
        """See `ActionTasks`."""
        for action_id, (of, waited_on) in self._open.items():
            if of == call and not waited_on:
                self._open[action_id] = (call, True)
                return action_id
        return None


class StateOfAnotherTenant(RuntimeError):
    """The gateway's state file is another tenant's gateway's: their proposals would pass for this one's."""


class SqliteActionTasks:
    """Kept in a SQLite file (the gateway's proposals file: one file of state); each write is committed at once.

    Each instance holds a lock file (`<file>.holders/<id>.lock`, `flock`) while it is open: the open calls it holds
    are another's to take over only once that lock is free (the process died) or the call was left.

    `tenant`: the tenant of the gateway opening it. The file is the first such tenant's; another tenant's gateway is
    refused (`StateOfAnotherTenant`): sharing it, a gateway took the other tenant's action ids for its own proposals and
    answered a poll of one `action_id_reused` (which told it the id exists) instead of `unknown`.
    """

    def __init__(self, path: str | os.PathLike[str], *, tenant: str | None = None) -> None:
        path = private_file(path)  # its owner's only
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        if tenant is not None:
            self._db.execute("CREATE TABLE IF NOT EXISTS gateway_owner (only INTEGER PRIMARY KEY CHECK (only = 1), tenant TEXT NOT NULL)")
            self._db.execute("INSERT OR IGNORE INTO gateway_owner (only, tenant) VALUES (1, ?)", (tenant,))
            (owner,) = self._db.execute("SELECT tenant FROM gateway_owner").fetchone()
            if owner != tenant:
                self._db.close()
                raise StateOfAnotherTenant(
                    f"{path} is the state of tenant {owner!r}'s MCP gateway, not tenant {tenant!r}'s: give each tenant's gateway "
                    "a TIDEGATE_CLIENT_STATE_DIR of its own (what one gateway proposed would pass for the other's)"
                )
        self._db.execute("CREATE TABLE IF NOT EXISTS gateway_tasks (action_id TEXT PRIMARY KEY, task_id TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS open_calls (action_id TEXT PRIMARY KEY, call TEXT NOT NULL, holder TEXT)")
        self._db.execute("CREATE TABLE IF NOT EXISTS owed_calls (action_id TEXT PRIMARY KEY, call TEXT NOT NULL)")
        self._holders = private_dir(path.with_suffix(".holders"))
        self._holder = uuid.uuid4().hex
        self._lock = os.open(private_file(self._holders / f"{self._holder}.lock"), os.O_RDWR)
        fcntl.flock(self._lock, fcntl.LOCK_EX)  # held until closed, or until the process dies

    def bind(self, action_id: str, task_id: str) -> str:
        """See `ActionTasks`."""
        self._db.execute("INSERT OR IGNORE INTO gateway_tasks (action_id, task_id) VALUES (?, ?)", (action_id, task_id))
        row = self._db.execute("SELECT task_id FROM gateway_tasks WHERE action_id = ?", (action_id,)).fetchone()
        return str(row[0])

    def hold(self, action_id: str, call: str) -> None:
        """See `ActionTasks`."""
        self._db.execute("INSERT OR REPLACE INTO open_calls (action_id, call, holder) VALUES (?, ?, ?)", (action_id, call, self._holder))

    def answered(self, action_id: str, *, owed: bool = False) -> None:
        """See `ActionTasks`."""
        if owed:
            self._db.execute(
                "INSERT OR REPLACE INTO owed_calls (action_id, call) SELECT action_id, call FROM open_calls WHERE action_id = ?",
                (action_id,),
            )
        else:
            self._db.execute("DELETE FROM owed_calls WHERE action_id = ?", (action_id,))
        self._db.execute("DELETE FROM open_calls WHERE action_id = ?", (action_id,))

    def following(self, call: str, task_id: str) -> str | None:
        """See `ActionTasks`; a call still waited on is this gateway's own (another's is taken over only once left: `orphan`)."""
        row = self._db.execute(
            "SELECT o.action_id FROM open_calls o JOIN gateway_tasks t USING (action_id)"
            " WHERE o.call = ? AND t.task_id = ? AND o.holder = ?"
            " UNION ALL SELECT w.action_id FROM owed_calls w JOIN gateway_tasks t USING (action_id) WHERE w.call = ? AND t.task_id = ?"
            " LIMIT 1",
            (call, task_id, self._holder, call, task_id),
        ).fetchone()
        return None if row is None else str(row[0])

    def left(self, action_id: str) -> None:
        """See `ActionTasks`."""
        self._db.execute("UPDATE open_calls SET holder = NULL WHERE action_id = ? AND holder = ?", (action_id, self._holder))

    def orphan(self, call: str) -> str | None:
        """See `ActionTasks`; two gateways after the same one: the first to take it has it, the other proposes anew."""
        rows = self._db.execute("SELECT action_id, holder FROM open_calls WHERE call = ? ORDER BY rowid", (call,)).fetchall()
        for action_id, holder in rows:
            if holder is not None and self._alive(holder):
                continue
            taken = self._db.execute(
                "UPDATE open_calls SET holder = ? WHERE action_id = ? AND holder IS ?", (self._holder, action_id, holder)
            )
            if taken.rowcount == 1:
                return str(action_id)
        return None

    def _alive(self, holder: str) -> bool:
        """Whether the gateway holding a call still runs: its lock file is locked (a dead process's lock is free)."""
        if holder == self._holder:
            return True
        path = self._holders / f"{holder}.lock"
        try:
            lock = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(lock)
        path.unlink(missing_ok=True)  # a dead gateway's: nothing will lock it again
        return False

    def close(self) -> None:
        """Leave the calls still held (their callers are gone with this gateway), release the lock, close the file."""
        self._db.execute("UPDATE open_calls SET holder = NULL WHERE holder = ?", (self._holder,))
        self._db.close()
        (self._holders / f"{self._holder}.lock").unlink(missing_ok=True)
        os.close(self._lock)
