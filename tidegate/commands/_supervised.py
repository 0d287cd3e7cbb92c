"""What `tidegate up`'s supervisor records of its children (`<run_dir>/up.json`), for `tidegate status` to read.

The supervisor rewrites the file whenever a child starts, dies or is given up on, and deletes it when it ends;
only the supervisor writes it, and each write replaces the file whole, so a reader never sees half of one.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Child",
    "Supervised",
    "alive",
    "ask_restart",
    "health_url",
    "left_running",
    "load",
    "process_start",
    "record_path",
    "restart_request",
    "restarts_asked",
    "same_process",
    "save",
    "utc_stamp",
    "write_private",
]


def alive(pid: int) -> bool:
    """Whether a process `pid` exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stat(pid: int) -> tuple[bytes, int] | None:
    """The state (`R`, `S`, `Z`…) and start (field 22) of `/proc/<pid>/stat`; None when /proc cannot tell."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()  # after the command name, which may hold ")"
        return fields[0], int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def process_start(pid: int) -> int | None:
    """When the process `pid` started (clock ticks since boot, field 22 of `/proc/<pid>/stat`); None when /proc cannot tell.

    A pid is reused once its process is gone; the pid with its start names one process for good.
    """
    stat = _stat(pid)
    return None if stat is None else stat[1]


def same_process(pid: int, start: int | None) -> bool:
    """Whether the process that had `pid` and started at `start` still runs (not another that took the pid since).

    `start` None (recorded where /proc could not tell): the pid alone, as before.
    """
    if not alive(pid):
        return False
    return start is None or process_start(pid) in (start, None)


def write_private(path: Path, text: str) -> None:
    """Replace `path` at once with `text`, readable by its owner alone (write beside it, then rename over it)."""
    part = path.with_name(f"{path.name}.part")
    part.unlink(missing_ok=True)
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(part, path)


def utc_stamp(at: datetime | None = None) -> str:
    """`at` (default: now) as ISO 8601 in UTC, to the millisecond, fixed width: `2026-12-04T17:51:54.033Z`."""
    return (at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Child(BaseModel):
    """One supervised service: its latest process, how often it was restarted, and where its `/health` is."""

    model_config = ConfigDict(frozen=True)

    state: Literal["running", "restarting", "not started"] = Field(
        description="`running`: a process was started and has not been seen to exit; `restarting`: it exited and waits "
        "out its backoff; `not started`: its settings are not valid, so it is not restarted (unless `tidegate restart` asks)."
    )
    pid: int | None = Field(description="The process id of its latest start.")
    pid_start: int | None = Field(
        default=None, description="When that process started (clock ticks since boot, /proc): a later process given the same pid is not it."
    )
    started_at: datetime = Field(description="When its latest process was started (UTC).")
    restarts: int = Field(default=0, ge=0, description="Starts after the first: each one followed a death or a `tidegate restart`.")
    last_exit: int | None = Field(default=None, description="The exit status of its last process that ended, if any.")
    restart_at: datetime | None = Field(default=None, description="While `restarting`: when it is started again.")
    reason: str | None = Field(default=None, description="While `not started`: what its log says keeps it from starting.")
    health_url: str | None = Field(default=None, description="Its `/health`, when `TIDEGATE_METRICS_PORT` gives it a port.")


class Supervised(BaseModel):
    """The whole file: the supervisor and every child it supervises."""

    supervisor_pid: int
    supervisor_start: int | None = Field(default=None, description="When the supervisor started (clock ticks since boot, /proc).")
    started_at: datetime
    services: dict[str, Child] = Field(default_factory=dict)


def health_url(host: str, port: int | None) -> str | None:
    """Where a child listening on `host` and given `port` answers `/health` (a wildcard address is asked on the loopback)."""
    if port is None:
        return None
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/health"


def record_path(run_dir: Path) -> Path:
    """Where the supervisor of `run_dir` keeps its record, beside its pid file (`up.pid`)."""
    return run_dir / "up.json"


def restart_request(run_dir: Path, name: str) -> Path:
    """Where `tidegate restart NAME` asks the supervisor of `run_dir` to restart `name`; the supervisor deletes it as it acts."""
    return run_dir / "restart" / name


def ask_restart(run_dir: Path, name: str) -> Path:
    """Ask the supervisor of `run_dir` to stop `name` cleanly and start it again at once (it looks at each tick, every second)."""
    path = restart_request(run_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, utc_stamp())
    return path


def restarts_asked(run_dir: Path, names: tuple[str, ...]) -> list[str]:
    """The services of `names` whose restart was asked, each request taken (deleted)."""
    taken = []
    for name in names:
        try:
            restart_request(run_dir, name).unlink()
        except FileNotFoundError:
            continue
        taken.append(name)
    return taken


def save(path: Path, supervised: Supervised) -> None:
    """Replace the file at once, readable by its owner alone (it names every process `tidegate down` stops)."""
    write_private(path, supervised.model_dump_json(indent=1))


def load(path: Path) -> Supervised | None:
    """The record, or None when there is none (no supervisor, or one that has not written it yet).

    Raises:
        OSError: the file cannot be read.
        ValidationError: it is not such a record.
    """
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    return Supervised.model_validate_json(text)


def left_running(services: dict[str, Child]) -> dict[str, Child]:
    """The children of `services` (a supervisor's record) whose own process still runs: what a killed supervisor left behind.

    Each is taken on its pid and its recorded start: one recorded without a start (no /proc) is not, since its pid
    may name another process by now, which `tidegate down` would stop.
    """
    return {name: child for name, child in services.items() if child.pid is not None and _running_since(child.pid, child.pid_start)}


def _running_since(pid: int, start: int | None) -> bool:
    """Whether the process `pid` that started at `start` runs (a zombie does not: it has ended, and waits to be reaped)."""
    stat = _stat(pid)
    return start is not None and stat is not None and stat[1] == start and stat[0] != b"Z"
