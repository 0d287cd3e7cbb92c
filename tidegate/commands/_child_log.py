"""The log of each service `tidegate up` supervises: the child writes into a pipe, the supervisor copies it into a file it rotates.

A pipe, not the file itself, is the child's stdout and stderr, so that the supervisor can rotate the file while the service
runs (a service runs for months without a restart, so reopening the file at each start would not bound it). The rotation is
the standard library's (`RotatingFileHandler`); `RotatingLog` adds what a service's log needs on top of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable
from io import TextIOWrapper
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

__all__ = ["LOG_KEEP", "LOG_MAX_BYTES", "Copy", "RotatingLog", "open_private_log", "start_logged"]

LOG_MAX_BYTES = 50 * 1024 * 1024  # a service's log is rotated once it holds this much
LOG_KEEP = 3  # rotated logs kept beside it: <name>.log.1 (the newest) to <name>.log.3
_LINE_MAX = 1024 * 1024  # a line with no end in this many bytes past the limit is cut, so one line cannot grow a log for ever
_PIECES = re.compile(r"[^\n]*\n|[^\n]+")  # each line with its end, and what follows the last end


def open_private_log(path: Path) -> int:
    """A descriptor appending to `path`, created readable by its owner alone (a log can hold tenant data).

    A log left readable by others (by an older version) is made private too.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    return fd


class RotatingLog(RotatingFileHandler):
    """`path`, appended to, rotated at a line's end before it holds more than `max_bytes`: `path.1` is the newest of `keep` old ones.

    What the standard library's handler does not: it is fed raw output (`write`), in pieces that may end inside a line; each
    file is created readable by its owner alone; a line longer than `max_bytes` is kept whole in a file of its own, unless
    it has no end `_LINE_MAX` bytes past the limit (then it is cut); a write or rotation the disk refuses is said once (`say`)
    until one succeeds again, and never holds up the service: what cannot be written is dropped, a log that cannot be
    rotated grows on. `follow`: descriptors pointed at each file it opens (the supervisor's stdout and stderr, so that what
    it prints outside its log, a traceback, lands in the current file, not in a rotated one).
    """

    terminator = ""  # each piece carries its own line end

    def __init__(
        self,
        path: Path,
        max_bytes: int = LOG_MAX_BYTES,
        keep: int = LOG_KEEP,
        *,
        say: Callable[[str], None],
        follow: tuple[int, ...] = (),
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep={keep}: the standard library's handler never rotates a log that keeps no old one")
        self._say, self._follow = say, follow
        self._refusing: set[str] = set()  # what the disk refuses now ("write", "rotate"): said once until it succeeds again
        self._refused_now = False
        self._ends_line = True  # what was written last ends a line (taken so of a log left by an earlier run)
        # Latin-1 maps each byte to one character and back: the bytes come out as the child wrote them, and a length in
        # characters (what the handler measures) is one in bytes.
        super().__init__(path, maxBytes=max_bytes, backupCount=keep, encoding="latin-1")

    def write(self, data: bytes) -> None:
        """Append `data` (what the child wrote), rotating first at a line's end when the next line would not fit."""
        for piece in _PIECES.findall(data.decode("latin-1")):
            self.handle(logging.makeLogRecord({"msg": piece}))

    def emit(self, record: logging.LogRecord) -> None:
        self._refused_now = False
        super().emit(record)  # rotates when `shouldRollover` says so, writes and flushes: nothing waits in this process
        if not self._refused_now:
            self._refusing.discard("write")
            self._ends_line = record.msg.endswith("\n")

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        """Whether to rotate before `record` (a line, or the start of one): it starts a line that would take the file past the limit."""
        if self.stream is None:  # a write refused dropped it
            self.stream = self._open()
        size = os.fstat(self.stream.fileno()).st_size  # the file's, whoever wrote to it (the supervisor's stderr)
        if size >= self.maxBytes + _LINE_MAX:
            return True  # a line that never ends is cut
        return self._ends_line and size > 0 and size + len(record.msg) > self.maxBytes

    def doRollover(self) -> None:
        try:
            super().doRollover()
        except OSError as exc:
            self._refused("rotate", f"cannot rotate {self.baseFilename}: {exc}; it grows on")
            return
        self._refusing.discard("rotate")

    def handleError(self, record: logging.LogRecord) -> None:
        """A write the disk refused: said once, what the stream still holds dropped (the standard library prints a traceback each time)."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handleError(record)
            return
        self._refused_now = True
        if self.stream is not None:
            with contextlib.suppress(OSError):
                self.stream.close()
            self.stream = None  # type: ignore[assignment]  # opened again by the next write
        self._refused("write", f"cannot write {self.baseFilename}: {exc}; the service's output is lost until it can")

    def _open(self) -> TextIOWrapper:
        fd = open_private_log(Path(self.baseFilename))
        for target in self._follow:
            os.dup2(fd, target)
        return open(fd, "a", encoding="latin-1", newline="")  # the handler closes it

    def _refused(self, what: str, message: str) -> None:
        if what not in self._refusing:
            self._refusing.add(what)  # before saying it: `say` may write into this very log
            self._say(message)


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
