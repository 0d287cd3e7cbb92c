"""Two writers of one login file at once never leave a reader an empty or partial file (the audit perf helper's F1).

`write_private` wrote through one fixed `<name>.tmp`: two `tidegate db migrate`s at once truncated each other's
temporary file, one put the other's still-empty file in place, and a service logging in then read an empty passfile
and was refused.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from servicekit.private_files import write_private


def test_a_reader_sees_a_whole_file_while_two_writers_race(tmp_path: Path) -> None:
    path = tmp_path / "policy.pgpass"
    texts = {f"*:*:*:tidegate_policy:{'p' * 64}{n}\n" for n in range(2)}
    write_private(path, next(iter(texts)))
    seen: set[str] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(path.read_text())

    def write(text: str) -> None:
        for _ in range(400):
            write_private(path, text)

    reader = threading.Thread(target=read)
    writers = [threading.Thread(target=write, args=(text,)) for text in texts]
    reader.start()
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    stop.set()
    reader.join()
    assert seen <= texts, f"a reader saw {sorted(seen - texts)!r}"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.pgpass"]  # no temporary file left behind
