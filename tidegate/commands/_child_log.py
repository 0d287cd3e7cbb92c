"""The log of each service `tidegate up` supervises: the child writes into a pipe, the supervisor copies it into a file it rotates.

A pipe, not the file itself, is the child's stdout and stderr, so that the supervisor can rotate the file while the service
runs (a service runs for months without a restart, so reopening the file at each start would not bound it).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["LOG_KEEP", "LOG_MAX_BYTES", "Copy", "RotatingLog", "open_private_log", "start_logged"]

LOG_MAX_BYTES = 50 * 1024 * 1024  # a service's log is rotated once it holds this much
LOG_KEEP = 3  # rotated logs kept beside it: <name>.log.1 (the newest) to <name>.log.3
_LINE_MAX = 1024 * 1024  # a line with no end in this many bytes past the limit is cut, so one line cannot grow a log for ever


def open_private_log(path: Path) -> int:
    """A descriptor appending to `path`, created readable by its owner alone (a log can hold tenant data).

    A log left readable by others (by an older version) is made private too.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    return fd


class RotatingLog:
    """`path`, appended to, rotated at a line's end before it holds more than `max_bytes`: `path.1` is the newest of `keep` old ones.

    A write or rotation the disk refuses is said once (`say`) until one succeeds again; the service is never held up by it.
    """

    def __init__(self, path: Path, max_bytes: int = LOG_MAX_BYTES, keep: int = LOG_KEEP, *, say: Callable[[str], None]) -> None:
        self.path, self.max_bytes, self.keep = path, max_bytes, keep
        self._say = say
        self._failing = False
        self._fd = open_private_log(path)
        self._size = os.fstat(self._fd).st_size
        self._ends_line = True  # what was written last ends a line (taken so of a log left by an earlier run)

    def write(self, data: bytes) -> None:
        """Append `data`, rotating at the last line end that keeps the file within `max_bytes` (a longer line is kept whole)."""
        while self._size + len(data) > self.max_bytes:
            cut = data.rfind(b"\n", 0, max(0, self.max_bytes - self._size)) + 1  # through the last whole line that fits
            if not cut and self._ends_line and self._size:  # not one more line fits: the next one starts the next file
                if not self._rotate():
                    break
                continue
            cut = cut or data.find(b"\n") + 1  # a line longer than what is left: whole, past the limit
            if not cut:
                break  # no line ends here: written below, rotated once it ends
            self._put(data[:cut])
            data = data[cut:]
            if not self._rotate():
                break
        self._put(data)
        if self._size >= self.max_bytes + _LINE_MAX:
            self._rotate()  # a line that never ends is cut

    def close(self) -> None:
        os.close(self._fd)

    def _put(self, data: bytes) -> None:
        if not data:
            return
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                self._size += written
                view = view[written:]
        except OSError as exc:
            self._failed(f"cannot write {self.path}: {exc}; the service's output is lost until it can")
            return
        self._failing = False
        self._ends_line = data.endswith(b"\n")

    def _rotate(self) -> bool:
        try:
            for i in range(self.keep, 1, -1):
                if self._numbered(i - 1).exists():
                    os.replace(self._numbered(i - 1), self._numbered(i))  # the oldest is replaced
            if self.keep:
                os.replace(self.path, self._numbered(1))
            else:
                self.path.unlink()
            fd = open_private_log(self.path)
        except OSError as exc:
            self._failed(f"cannot rotate {self.path}: {exc}; it grows on")
            return False
        os.close(self._fd)
        self._fd, self._size = fd, 0
        return True

    def _numbered(self, i: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{i}")

    def _failed(self, message: str) -> None:
        if not self._failing:
            self._say(message)
        self._failing = True


class Copy(asyncio.Protocol):
    """Copies what comes out of a child's pipe into its log, until the child (and any process it left holding the pipe) ends."""

    def __init__(self, log: RotatingLog) -> None:
        self._log = log
        self._transport: asyncio.BaseTransport | None = None
        self._done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._log.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result(None)

    @property
    def done(self) -> bool:
        return self._done.done()

    async def drained(self, timeout_s: float) -> bool:
        """Wait until everything the child wrote is in the log (at most `timeout_s`); whether it is."""
        try:
            await asyncio.wait_for(asyncio.shield(self._done), timeout_s)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Stop copying (what is still in the pipe is not read)."""
        if self._transport is not None:
            self._transport.close()


async def start_logged(argv: list[str], log: RotatingLog, **options: Any) -> tuple[asyncio.subprocess.Process, Copy]:
    """Start `argv` with its stdout and stderr a pipe that is copied into `log`; `options` go to `create_subprocess_exec`."""
    read_end, write_end = os.pipe()  # both close-on-exec: the child gets only the copy made its stdout and stderr
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=write_end, stderr=subprocess.STDOUT, **options)
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)  # the child holds its own: the pipe ends when the child does
    pipe = open(read_end, "rb", buffering=0)  # noqa: SIM115, ASYNC230  (wraps the descriptor: nothing blocks; the transport closes it)
    _, copy = await asyncio.get_running_loop().connect_read_pipe(lambda: Copy(log), pipe)
    return proc, copy
