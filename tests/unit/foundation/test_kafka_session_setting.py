"""`TIDEGATE_KAFKA_SESSION_MAX_S`, the longest a Kafka login lasts: a value that is not whole seconds is refused, with what to give.

As the operator who sets it: the broker would otherwise be handed `connections.max.reauth.ms=` with a shell error in it.
What the setting does on a real broker: tests/chaos/test_session_expiry.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from servicekit import REPO_ROOT

SCRIPT = REPO_ROOT / "infra" / "infra.sh"


@pytest.mark.parametrize("value", ["5m", "-1", "1.5"])
def test_a_session_bound_that_is_not_whole_seconds_is_refused(tmp_path: Path, value: str) -> None:
    env = os.environ | {"TIDEGATE_INFRA_DIR": str(tmp_path), "TIDEGATE_KAFKA_SESSION_MAX_S": value}
    done = subprocess.run(["bash", str(SCRIPT), "status"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "TIDEGATE_KAFKA_SESSION_MAX_S must be a whole number of seconds (0: sessions never end)" in done.stderr


def test_the_default_and_zero_are_taken(tmp_path: Path) -> None:
    for value in ("300", "0"):
        env = os.environ | {"TIDEGATE_INFRA_DIR": str(tmp_path), "TIDEGATE_KAFKA_SESSION_MAX_S": value}
        done = subprocess.run(["bash", str(SCRIPT), "status"], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 3, done.stderr  # nothing runs there: status says so, the value is not refused


def broker_config(tmp_path: Path, value: str) -> subprocess.CompletedProcess[str]:
    """docker compose's broker entrypoint (infra/compose-kafka.sh) run with stand-ins for Kafka's tools, the bound set to `value`."""
    creds, dist = tmp_path / "creds", tmp_path / "kafka"
    (creds / "admin").mkdir(parents=True)
    (creds / "admin" / "admin.properties").write_text('sasl.jaas.config=x required username="admin" password="pw";\n')
    (creds / "controller.secret").write_text("secret\n")
    (dist / "bin").mkdir(parents=True)
    for tool in ("kafka-storage.sh", "kafka-server-start.sh"):
        (dist / "bin" / tool).write_text("#!/usr/bin/env bash\n")
        (dist / "bin" / tool).chmod(0o755)
    env = os.environ | {
        "TIDEGATE_KAFKA_CREDENTIALS_DIR": str(creds),
        "KAFKA_DIST": str(dist),
        "KAFKA_DATA_DIR": str(tmp_path / "data"),
        "KAFKA_CONF_FILE": str(tmp_path / "server.properties"),
        "CLUSTER_ID": "H5xCEzYRS9qpBucOV4XaGg",
        "TIDEGATE_KAFKA_SESSION_MAX_S": value,
    }
    return subprocess.run(["bash", str(REPO_ROOT / "infra" / "compose-kafka.sh")], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("value", "ms"), [("300", 300_000), ("0300", 300_000), ("08", 8_000), ("0", 0)])
def test_the_compose_broker_reads_the_bound_as_decimal_seconds(tmp_path: Path, value: str, ms: int) -> None:
    """A leading zero is not octal: `0300` was 192 s, and `08` a shell error in the middle of writing the broker's config."""
    done = broker_config(tmp_path, value)
    assert done.returncode == 0, done.stderr
    assert f"\nconnections.max.reauth.ms={ms}\n" in (tmp_path / "server.properties").read_text()


@pytest.mark.parametrize("value", ["5m", "-1", "1.5", "1e3"])
def test_the_compose_broker_refuses_a_bound_that_is_not_whole_seconds(tmp_path: Path, value: str) -> None:
    done = broker_config(tmp_path, value)
    assert done.returncode == 2
    assert "TIDEGATE_KAFKA_SESSION_MAX_S must be a whole number of seconds (0: sessions never end)" in done.stderr
    assert not (tmp_path / "server.properties").exists()
