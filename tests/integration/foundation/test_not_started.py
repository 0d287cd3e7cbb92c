"""A service whose database is there but not migrated says so in one line and exits 1, for its supervisor to try again."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

from servicekit import REPO_ROOT
from servicekit.dbroles import with_database


def test_a_schema_not_migrated_is_one_line_naming_the_command_that_migrates_it(infra: Any) -> None:
    empty = f"tidegate_empty_{uuid.uuid4().hex[:8]}"
    subprocess.run(["psql", infra.admin_database_url, "-qc", f"CREATE DATABASE {empty}"], check=True)
    try:
        env = os.environ | {
            "TIDEGATE_DATABASE_URL": with_database(infra.database_url, empty),
            "TIDEGATE_KAFKA_BOOTSTRAP": infra.kafka_bootstrap,
        }
        command = [sys.executable, "-m", "tidegate.cli", "service", "run", "policy"]
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    finally:
        subprocess.run(["psql", infra.admin_database_url, "-qc", f"DROP DATABASE IF EXISTS {empty} WITH (FORCE)"], check=False)
    assert done.returncode == 1, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("policy: not started: SchemaNotReady: schema policy is not migrated: run `tidegate db migrate`"), last
    assert "Traceback" not in done.stderr


def test_a_mistyped_topic_prefix_is_one_line_naming_the_prefix_and_is_not_restarted(infra: Any) -> None:
    """An operator types `tidegat.`: the service's login holds rights on `tidegate.` alone, so the broker refuses each topic.

    Before, the service exited 1 with Kafka's bare `TopicAuthorizationFailedError`, which `tidegate up` restarted forever,
    and left its consumers open ("Unclosed AIOKafkaConsumer" on stderr).
    """
    env = os.environ | {
        "TIDEGATE_DATABASE_URL": infra.database_url,
        "TIDEGATE_KAFKA_BOOTSTRAP": infra.kafka_bootstrap,
        "TIDEGATE_TOPIC_PREFIX": "tidegat.",
    }
    command = [sys.executable, "-m", "tidegate.cli", "service", "run", "policy"]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 78, done.stderr[-2000:]  # EX_CONFIG: `tidegate up` does not restart it
    line = next(line for line in done.stderr.splitlines() if line.startswith("policy: not started:"))
    assert "its Kafka login `policy` may not use topic tidegat." in line, line
    assert "TIDEGATE_TOPIC_PREFIX='tidegat.'" in line, line
    assert "tidegate topics ensure" in line, line
    assert "Traceback" not in done.stderr
    assert "Unclosed AIOKafkaConsumer" not in done.stderr
