"""Secrets written to a file of their own: 0600, and replaced at once.

One writer for every secret the kit and the commands keep in a file (a PostgreSQL passfile, a Kafka login's client
file, the MCP gateway's token): a reader sees the old file or the new one, never a part, and each writer has a temporary
file of its own. Two `tidegate db migrate`s at once once shared one fixed `<name>.tmp`, so one truncated the file the
other was about to put in place, and a service logging in between read an empty passfile.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_private"]


def write_private(path: Path, text: str) -> None:
    """Write `path` 0600 at once, through a temporary file made in its folder by this writer only."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
