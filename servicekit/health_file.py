"""A service's `/health` answer written beside its ready file, for `tidegate status` when no port serves `/health`.

Without `TIDEGATE_METRICS_PORT`, `tidegate status` had only the ready file to go on, written once at start: a service
whose broker had been gone for minutes was still `ready`, and `status` said `all healthy` (oncall3, left alone).
The watchdog (`ServiceProcess.watch`, every 5 s) now writes what `/health` would
answer to `<ready_dir>/<service>.health`, the time with it; `status` reads it as it reads `/health` (`ok`, `retrying`,
`unhealthy` with the reason), and calls an answer older than `STALE_AFTER_S` what it is: a watchdog that no longer
writes (a hung event loop) is not healthy.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["STALE_AFTER_S", "health_path", "read_health", "write_health"]

# The watchdog writes every 5 s; a minute without a write is a loop that does not run (load on a small host stays far below).
STALE_AFTER_S = 60.0


def health_path(ready_dir: Path, service: str) -> Path:
    """Where `service` writes its health: beside its ready file."""
    return ready_dir / f"{service}.health"


def write_health(ready_dir: Path, service: str, answer: dict[str, Any], now: float | None = None) -> None:
    """Write `answer` (what `/health` answers) with the time, whole: a reader never sees half of it (a rename)."""
    path = health_path(ready_dir, service)
    part = path.with_name(f".{path.name}.part")
    part.write_text(json.dumps({"at": time.time() if now is None else now, "answer": answer}, default=str))
    os.replace(part, path)


def read_health(ready_dir: Path, service: str, now: float | None = None) -> tuple[int, Any] | None:
    """The written answer as `/health` would serve it (200 or 503, body), or None when none was written.

    An answer older than `STALE_AFTER_S` comes back as a 503 whose reason says how old it is.
    """
    try:
        written = json.loads(health_path(ready_dir, service).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(written, dict) or not isinstance(written.get("answer"), dict):
        return None
    answer: dict[str, Any] = written["answer"]
    age = (time.time() if now is None else now) - float(written.get("at") or 0)
    if age > STALE_AFTER_S:
        return 503, {
            "ok": False,
            "reason": f"its watchdog last wrote its health {age:.0f}s ago (every 5 s when its loop runs): hung, or stopped",
        }
    return (200 if answer.get("ok") else 503), answer
