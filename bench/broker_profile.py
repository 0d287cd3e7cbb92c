"""Sample the Kafka broker with Java Flight Recorder (the JDK's `jcmd` and `jfr`) and sum up what its CPU is spent on.

The broker is the largest consumer of CPU per governed action after the services at a steady rate
(docs/benchmarks.md), and none of it is Tidegate's code: what it spends follows the requests the
services send and what each one asks of it. JFR samples the threads that run Java code every 10 ms
(`settings=profile`); each sample is counted once, in the first part below whose frames are on its stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["PARTS", "read", "record", "stop", "summarise", "tools"]

NETWORK = "network threads: reading requests, writing responses"  # also a network thread's sample no other part takes
# (label, frames any of which puts a sample in it), in the order a sample is matched: the first part that matches wins.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("checking each request against the ACLs (the authorizer)", ("kafka.server.AuthHelper.", ".authorizer.StandardAuthorizer")),
    ("recording each request's latency histograms (request metrics)", ("RequestChannel$Request.updateRequestMetrics",)),
    ("trying the fetches held in purgatory again (after each write, and as each fetch comes)", ("kafka.server.DelayedFetch.",)),
    ("reading records for fetches", ("ReplicaManager.readFromLog",)),
    ("appending produced records and acknowledging them", ("ReplicaManager.appendRecords", "ReplicaManager.appendToLocalLog")),
    ("consumer groups: joins, heartbeats, offsets", ("group.GroupCoordinator", "coordinator.group.", "handleOffsetCommitRequest")),
    ("handling requests otherwise (parsing, building responses)", ("kafka.server.KafkaApis.handle",)),
    (NETWORK, ("kafka.network.Processor.",)),
)
REQUESTS = (("fetch", "KafkaApis.handleFetchRequest"), ("produce", "KafkaApis.handleProduceRequest"))
OTHER = "the controller, metadata, log cleaning and the JVM's own threads"
_EVENT = re.compile(r"^jdk\.ExecutionSample \{$", re.MULTILINE)
_THREAD = re.compile(r'sampledThread = "([^"]*)"')
_FRAME = re.compile(r"^\s+(\S.*?\))\s+line:", re.MULTILINE)


def tools() -> tuple[str, str] | None:
    """`jcmd` and `jfr` of the JDK on PATH (the one that runs the broker), or None."""
    jcmd, jfr = shutil.which("jcmd"), shutil.which("jfr")
    return (jcmd, jfr) if jcmd and jfr else None


async def record(pid: int, out: Path, duration_s: int) -> asyncio.subprocess.Process | None:
    """Start a flight recording of the JVM `pid` for `duration_s` into `out`; None when the JDK's tools are missing."""
    found = tools()
    if found is None:
        return None
    proc = await asyncio.create_subprocess_exec(
        found[0], str(pid), "JFR.start", "name=tidegate-bench", "settings=profile", f"duration={duration_s}s", f"filename={out}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await proc.wait()
    return proc if proc.returncode == 0 else None


async def stop(pid: int, started: asyncio.subprocess.Process | None, timeout_s: float = 60) -> None:
    """End the recording now (it also ends by itself after its duration) and let the JVM write its file."""
    found = tools()
    if started is None or found is None:
        return
    proc = await asyncio.create_subprocess_exec(
        found[0], str(pid), "JFR.stop", "name=tidegate-bench", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), timeout_s)


def part_of(thread: str, frames: list[str]) -> str:
    """The part of the broker's work a sample belongs to: the first of `PARTS` one of whose frames is on its stack."""
    for label, markers in PARTS:
        if any(marker in frame for frame in frames for marker in markers):
            return label
    return NETWORK if "network-thread" in thread else OTHER


def summarise(printed: str) -> dict[str, Any]:
    """Shares of the samples (`jfr print --events jdk.ExecutionSample --stack-depth 64`) by part and by request."""
    parts: Counter[str] = Counter()
    requests: Counter[str] = Counter()
    samples = 0
    for event in _EVENT.split(printed)[1:]:
        frames = _FRAME.findall(event)
        if not frames:
            continue
        samples += 1
        thread_match = _THREAD.search(event)
        thread = thread_match.group(1) if thread_match else "?"
        parts[part_of(thread, frames)] += 1
        for name, marker in REQUESTS:
            if any(marker in frame for frame in frames):
                requests[name] += 1

    def shares(counts: Counter[str]) -> list[tuple[str, float]]:
        return [(label, round(100 * n / samples, 1)) for label, n in counts.most_common()] if samples else []

    return {"samples": samples, "parts": shares(parts), "requests": shares(requests)}


def read(jfr_file: Path) -> dict[str, Any] | None:
    """The summary of a recording, or None when there is none to read."""
    found = tools()
    if found is None or not jfr_file.exists():
        return None
    printed = subprocess.run(
        [found[1], "print", "--events", "jdk.ExecutionSample", "--stack-depth", "64", str(jfr_file)],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    return summarise(printed.stdout) if printed.returncode == 0 else None
