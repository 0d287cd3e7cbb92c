"""Sample a running service with py-spy (PyPI) and summarise where its time goes (top frames)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from servicekit import REPO_ROOT

__all__ = ["py_spy", "summarise"]

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    """py-spy's binary: beside this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def record(pid: int, out: Path, duration_s: int, rate: int = 50) -> asyncio.subprocess.Process | None:
    """Start sampling `pid` for `duration_s` into `out` (collapsed stacks); None when py-spy is missing.

    Only samples where the process holds the GIL count (`--gil`): its Python CPU, not the time it waits
    in a system call or for a core (which on a loaded machine piled up in socket writes).
    """
    binary = py_spy()
    if binary is None:
        return None
    return await asyncio.create_subprocess_exec(
        binary, "record", "--pid", str(pid), "--duration", str(duration_s), "--rate", str(rate), "--nonblocking", "--gil",
        "--format", "raw", "--output", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def stop(proc: asyncio.subprocess.Process | None, timeout_s: float = 60) -> None:
    """Wait for py-spy to write its file (it stops by itself after its duration, or on SIGINT)."""
    if proc is None:
        return
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(2)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), timeout_s)


def short(frame: str) -> str:
    """`func (path:line)` as `func (path)`, the path from its package down (site-packages or the repository)."""
    match = FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", f"{REPO_ROOT}/", "/lib/python3.11/"):
        path = path.split(marker, 1)[-1]
    return f"{match['func']} ({path})"


def summarise(collapsed: str, top: int = 12) -> dict[str, Any]:
    """Samples, the frames where most time is spent themselves (self), and those under which most time goes (total)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    calls: dict[str, Counter[str]] = {}
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [short(f) for f in stack.split(";") if f]
        if frames:
            own[frames[-1]] += n
        work = _below_spine(frames)
        for frame in set(work):
            total[frame] += n
        for caller, callee in set(itertools.pairwise(work)):
            calls.setdefault(caller, Counter())[callee] += n
    if not samples:
        return {"samples": 0, "self": [], "total": []}
    # What nearly every sample is under (the service's runner, its consume loop) says little too: under 95 % only;
    # nor does a frame that passes nearly all its time to one callee (a chain of middlewares): its callee is listed.
    below = [(f, n) for f, n in total.most_common() if n < 0.95 * samples and max(calls.get(f, Counter()).values(), default=0) < 0.97 * n][
        :top
    ]
    return {
        "samples": samples,
        "self": [(f, round(100 * n / samples, 1)) for f, n in own.most_common(top)],
        "total": [(f, round(100 * n / samples, 1)) for f, n in below],
    }


# The event loop's dispatch: every frame from a stack's root down to the last of these is the process's spine
# (its main, the CLI that started it, the loop), on the stack of every sample the loop ran, so it says nothing.
_SPINE_ENDS = frozenset({"Handle._run (asyncio/events.py)", "BaseEventLoop._run_once (asyncio/base_events.py)"})


def _below_spine(frames: list[str]) -> list[str]:
    """`frames` (root first) without the event loop's spine: those after its last dispatch frame, or all if none."""
    ends = [i for i, frame in enumerate(frames) if frame in _SPINE_ENDS]
    return frames[ends[-1] + 1 :] if ends else frames
