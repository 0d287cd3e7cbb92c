"""Which task each action the gateway proposed belongs to, so a call retried under its action id is the same call.

The client binds an action id to its call (tenant, task, tool, args), and each gateway process proposes
under a task of its own. A call retried under its action id after a restart (or through another gateway
sharing the state dir) is proposed under the task it was first proposed in; under the new process's task
it would be another call, refused as `action_id_reused`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Protocol

from tidegate.client._private import private_file

__all__ = ["ActionTasks", "MemoryActionTasks", "SqliteActionTasks"]


class ActionTasks(Protocol):
    """The task of each action id the gateway proposed."""

    def bind(self, action_id: str, task_id: str) -> str:
        """The task `action_id` belongs to: the one bound first, else `task_id`, bound now."""
        ...


class MemoryActionTasks:
    """For a gateway whose process never restarts (and tests)."""

    def __init__(self) -> None:
        self._tasks: dict[str, str] = {}

    def bind(self, action_id: str, task_id: str) -> str:
        """See `ActionTasks`."""
        return self._tasks.setdefault(action_id, task_id)


class SqliteActionTasks:
    """Kept in a SQLite file (the gateway's proposals file: one file of state); each bind is committed at once."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(private_file(path), isolation_level=None, check_same_thread=False)  # its owner's only
        self._db.execute("CREATE TABLE IF NOT EXISTS gateway_tasks (action_id TEXT PRIMARY KEY, task_id TEXT NOT NULL)")

    def bind(self, action_id: str, task_id: str) -> str:
        """See `ActionTasks`."""
        self._db.execute("INSERT OR IGNORE INTO gateway_tasks (action_id, task_id) VALUES (?, ?)", (action_id, task_id))
        row = self._db.execute("SELECT task_id FROM gateway_tasks WHERE action_id = ?", (action_id,)).fetchone()
        return str(row[0])

    def close(self) -> None:
        """Close the file."""
        self._db.close()
