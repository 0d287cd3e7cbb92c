"""Files the client and the MCP gateway keep for themselves: readable by their owner only.

They hold tool results, signed proposals with their args, and the gateway's bearer token.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["private_dir", "private_file"]


def private_dir(path: Path) -> Path:
    """`path`, made with its missing parents if it is missing: each folder made here is 0700 (an existing one is left as it is)."""
    for folder in reversed([path, *path.parents]):
        if not folder.exists():
            folder.mkdir(mode=0o700, exist_ok=True)
    return path


def private_file(path: str | os.PathLike[str]) -> Path:
    """`path`, made empty and 0600 if it is missing; an existing one that others may read is made 0600."""
    path = Path(path)
    private_dir(path.parent)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:  # left by an older version, before these files were private
            path.chmod(0o600)
    return path
