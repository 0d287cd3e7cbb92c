"""A supervisor killed with `kill -9` takes its services with it (an on-call probe: they ran on, unsupervised, holding their
ports, and the next `tidegate up` crash-looped on `Address already in use`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from servicekit import REPO_ROOT
from tidegate.commands._supervised import load, record_path

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")

SUPERVISOR = """
import asyncio, sys
from tidegate.commands._supervisor import supervise
asyncio.run(supervise(("policy",), command=lambda name: [sys.executable, "-c", "import time; time.sleep(120)"]))
"""


def gone(pid: int) -> bool:
    """No such process, or a zombie nobody reaped yet (in a container, pid 1 may not reap an orphan)."""
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] == b"Z"
    except FileNotFoundError:
        return True


def poll(condition: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = os.environ | {"TIDEGATE_RUN_DIR": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    env.pop("TIDEGATE_METRICS_PORT", None)
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR], env=env, stdout=subprocess.DEVNULL)
    yield proc
    proc.kill()
    proc.wait()


def test_a_supervisor_killed_with_sigkill_takes_its_services_with_it(tmp_path: Path, supervisor: subprocess.Popen[bytes]) -> None:
    def child_pid() -> int | None:
        record = load(record_path(tmp_path)) if record_path(tmp_path).exists() else None
        return record.services["policy"].pid if record is not None and "policy" in record.services else None

    assert poll(lambda: child_pid() is not None, 30), "the supervisor recorded no child"
    child = child_pid()
    assert child is not None
    try:
        time.sleep(1.5)  # past a tick of the supervisor's loop: the death signal is tied to the thread that forked, not the process
        assert not gone(child), "the child died while its supervisor was alive"
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait()
        assert poll(lambda: gone(child), 5), f"the child (pid {child}) outlived its supervisor killed with SIGKILL"
    finally:
        if not gone(child):
            os.kill(child, signal.SIGKILL)
