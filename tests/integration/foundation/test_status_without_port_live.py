"""The on-call person's `tidegate status` on a `tidegate up` run without `TIDEGATE_METRICS_PORT`, through an outage.

oncall3 (left alone): with no port to ask `/health`, `status` read the ready file, written once at start, and said
`all healthy` (exit 0) while every service had lost its broker. Here the executor's database stops answering it (its login
refused, its connections dropped, as a restart of PostgreSQL does): its own `/health` says `retrying: the database at …`,
and `status` must say so too, not `ready`, and exit 1; once the database answers again, `ok` and exit 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from servicekit import REPO_ROOT, KitSettings
from servicekit.dbroles import service_role

pytestmark = pytest.mark.timeout(480)  # `up --detach` of one service on two shared cores; polls end at the first answer

KILL_ROLE_CONNECTIONS = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND usename = $1"


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidegate.cli", *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )


def executor_status(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    done = cli(env, "status", "--json", timeout=90)
    return done.returncode, json.loads(done.stdout)["services"][0]


async def test_status_without_a_metrics_port_says_the_database_outage_the_service_sees(
    kit: KitSettings, infra: Any, tmp_path: Path, wait_for: Any
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TIDEGATE_METRICS_PORT"} | {
        "TIDEGATE_KAFKA_BOOTSTRAP": kit.kafka_bootstrap,
        "TIDEGATE_DATABASE_URL": kit.database_url,
        "TIDEGATE_TOPIC_PREFIX": kit.topic_prefix,
        "TIDEGATE_KEYS_DIR": str(kit.keys_dir),
        "TIDEGATE_RUN_DIR": str(tmp_path / "run"),
        "COLUMNS": "400",
    }
    role = service_role("executor", infra.role_prefix)
    admin = await asyncpg.connect(infra.admin_database_url)
    started = cli(env, "up", "--detach", "--only", "executor", "--wait", "90")
    try:
        assert started.returncode == 0, started.stdout + started.stderr

        async def healthy() -> dict[str, Any] | None:
            code, now = executor_status(env)
            return now if code == 0 else None

        before = await wait_for(healthy, timeout=120, interval=0.5, what="the executor healthy")
        assert (before["probe"], before["health"]) == ("ready file", "ok")  # its watchdog's answer, not the bare ready file

        await admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT 0')
        assert await admin.fetchval(KILL_ROLE_CONNECTIONS, role) >= 1  # its pool must log in again, and is refused

        async def said() -> tuple[int, dict[str, Any]] | None:
            code, now = executor_status(env)
            return (code, now) if now["health"] != "ok" else None

        code, during = await wait_for(said, timeout=120, interval=1, what="status saying the database outage")
        assert code == 1, during
        assert during["health"] == "retrying", during
        assert "the database at" in during["detail"], during
        assert during["healthy"] is False
        table = cli(env, "status", timeout=90)
        assert table.returncode == 1
        assert "not healthy: executor" in table.stdout, table.stdout
        assert "all healthy" not in table.stdout

        await admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT -1')
        after = await wait_for(healthy, timeout=120, interval=1, what="the executor healthy again")
        assert after["health"] == "ok"
    finally:
        await admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT -1')
        await admin.close()
        stopped = cli(env, "down", "--timeout", "40")
    assert stopped.returncode == 0, stopped.stderr
    assert not (tmp_path / "run" / "ready" / "executor.health").exists()  # a clean stop leaves no health behind
