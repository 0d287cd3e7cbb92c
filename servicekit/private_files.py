"""Files written at once, through a temporary file of each writer's own: secrets 0600, public keys 0644.

One writer for every secret the kit and the commands keep in a file (a PostgreSQL passfile, a Kafka login's client
file, the MCP gateway's token, a signing or sealing private key) and for the files services read while another process
may be writing them (public keys, sealed checkpoints): a reader sees the old file or the new one, never a part, and
each writer has a temporary file of its own. Two `tidegate db migrate`s at once once shared one fixed `<name>.tmp`, so
one truncated the file the other was about to put in place, and a service logging in between read an empty passfile;
two starts making one signing key shared `<name>.key.tmp` the same way.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_at_once", "write_private"]


def write_at_once(path: Path, data: str | bytes, *, mode: int = 0o600, exclusive: bool = False) -> None:
    """Write `path` whole or not at all, through a temporary file made in its folder by this writer only.

    `mode`: the file's (0600 unless said; 0644 for a public key every service reads). `exclusive`: put in place only if
    `path` does not exist yet (a link, atomic), else FileExistsError: for a key another process may have just made.
    """
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # 0600
    try:
        if mode != 0o600:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data.encode() if isinstance(data, str) else data)
        if exclusive:
            os.link(name, path)
            os.unlink(name)
        else:
            os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def write_private(path: Path, data: str | bytes, *, exclusive: bool = False) -> None:
    """Write `path` 0600 at once (`write_at_once`): a secret."""
    write_at_once(path, data, exclusive=exclusive)
