"""`tidegate restart policy` over a real `tidegate up --detach`: a clean stop, a start at once, healthy again; logs kept private."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from servicekit import KitSettings
from tests.integration.foundation.test_status_live import a_free_port, cli, policy_status


def test_restart_stops_a_real_service_cleanly_and_waits_until_it_is_healthy_again(kit: KitSettings, tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = os.environ | {
        "TIDEGATE_KAFKA_BOOTSTRAP": kit.kafka_bootstrap,
        "TIDEGATE_DATABASE_URL": kit.database_url,
        "TIDEGATE_TOPIC_PREFIX": kit.topic_prefix,
        "TIDEGATE_KEYS_DIR": str(kit.keys_dir),
        "TIDEGATE_RUN_DIR": str(run),
        "TIDEGATE_METRICS_PORT": str(a_free_port()),
        "COLUMNS": "400",
    }
    started = cli(env, "up", "--detach", "--only", "policy", "--wait", "90")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        first = policy_status(env)[1]["pid"]
        began = time.monotonic()
        done = cli(env, "restart", "policy", "--wait", "60")
        took = time.monotonic() - began
        assert done.returncode == 0, done.stdout + done.stderr
        code, policy = policy_status(env)
        assert code == 0, policy
        assert done.stdout.strip() == f"policy restarted (pid {policy['pid']}) and healthy"
        assert (policy["restarts"], policy["last_exit"], policy["health"]) == (1, 0, "ok")  # exit 0: it stopped cleanly
        assert policy["pid"] != first
        assert took < 30, took  # no backoff: the time to stop and start, not a crash's wait
    finally:
        stopped = cli(env, "down", "--timeout", "40")
    assert stopped.returncode == 0, stopped.stderr
    said = (run / "logs" / "supervisor.log").read_text()
    assert "policy: restart asked (`tidegate restart`); stopping it" in said
    assert "policy exited with 0 (stopped for `tidegate restart`); starting it again now" in said
    for log in ("policy.log", "supervisor.log"):
        assert stat.S_IMODE((run / "logs" / log).stat().st_mode) == 0o600, log
    assert (run / "logs" / "policy.log").read_text().count("policy started") >= 2  # both runs' lines, through the pipe
