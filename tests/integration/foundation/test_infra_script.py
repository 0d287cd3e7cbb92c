"""`infra up` twice, then `infra down`, leaves none of its processes running.

Runs a copy of infra/ in a scratch repo on other ports, so the shared infrastructure is untouched.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from servicekit import REPO_ROOT

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ours(root: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", str(root / ".infra")], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def test_up_twice_then_down_leaves_nothing_running() -> None:
    # Not pytest's tmp_path: every pytest session resets /tmp/pytest-of-<user> to 0700, and the `postgres` user
    # must reach its data directory for as long as the test runs (a session started meanwhile broke `down` once).
    scratch = Path(tempfile.mkdtemp(prefix="tidegate-infra-test-"))
    os.chmod(scratch, 0o755)
    root = scratch / "repo"
    shutil.copytree(REPO_ROOT / "infra", root / "infra")
    env = os.environ | {
        "TIDEGATE_KAFKA_PORT": str(free_port()),
        "TIDEGATE_KAFKA_CONTROLLER_PORT": str(free_port()),
        "TIDEGATE_PG_PORT": str(free_port()),
    }
    script = ["bash", str(root / "infra" / "infra.sh")]
    try:
        subprocess.run([*script, "up"], env=env, check=True, timeout=240)
        assert ours(root), "nothing started"
        subprocess.run([*script, "up"], env=env, check=True, timeout=120)
        status = subprocess.run([*script, "status"], env=env, capture_output=True, text=True, timeout=60)
        assert status.returncode == 0
        assert env["TIDEGATE_KAFKA_PORT"] in status.stdout
        assert "log" in status.stdout
        subprocess.run([*script, "down"], env=env, check=True, timeout=120)
        assert ours(root) == []
        assert subprocess.run([*script, "status"], env=env, capture_output=True, timeout=60).returncode == 3
    finally:
        subprocess.run([*script, "down"], env=env, timeout=120)
        shutil.rmtree(scratch, ignore_errors=True)
