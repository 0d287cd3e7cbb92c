"""`tidegate status` over a real `tidegate up --detach`: the service's pid, its `/health`, a restart after a kill -9, then none."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from servicekit import REPO_ROOT, KitSettings


def a_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tidegate.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)


def policy_status(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    done = cli(env, "status", "--json", timeout=30)
    return done.returncode, json.loads(done.stdout)["services"][0]


async def test_status_follows_a_supervised_service_through_a_kill(kit: KitSettings, tmp_path: Path, wait_for: Any) -> None:
    port = a_free_port()
    env = os.environ | {
        "TIDEGATE_KAFKA_BOOTSTRAP": kit.kafka_bootstrap,
        "TIDEGATE_DATABASE_URL": kit.database_url,
        "TIDEGATE_TOPIC_PREFIX": kit.topic_prefix,
        "TIDEGATE_KEYS_DIR": str(kit.keys_dir),
        "TIDEGATE_RUN_DIR": str(tmp_path / "run"),
        "TIDEGATE_METRICS_PORT": str(port),
        "COLUMNS": "400",
    }
    started = cli(env, "up", "--detach", "--only", "policy", "--wait", "90")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        code, policy = policy_status(env)
        assert code == 0, policy
        assert policy | {"pid": None, "started_at": None, "up_s": None} == {
            "service": "policy", "state": "running", "pid": None, "started_at": None, "up_s": None, "restarts": 0, "last_exit": None,
            "health": "ok", "detail": None, "healthy": True, "probe": f"http://127.0.0.1:{port}/health",
        }  # fmt: skip
        first = policy["pid"]

        os.kill(first, signal.SIGKILL)

        async def restarted() -> dict[str, Any] | None:
            code, now = policy_status(env)
            return now if code == 0 and now["restarts"] == 1 else None

        again = await wait_for(restarted, timeout=90, interval=0.5, what="policy restarted and healthy")
        assert (again["last_exit"], again["health"]) == (-signal.SIGKILL, "ok")
        assert again["pid"] != first

        log = (tmp_path / "run" / "logs" / "supervisor.log").read_text().splitlines()
        assert "policy was killed by signal 9 (SIGKILL); restarting in 1s" in " ".join(log)  # not "exited with -9" (SRE probe F6)
        assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ", line) for line in log), log
    finally:
        stopped = cli(env, "down", "--timeout", "40")
    assert stopped.returncode == 0, stopped.stderr
    after = cli(env, "status")
    assert after.returncode == 3
    assert after.stderr.startswith("services are not running"), after.stderr
