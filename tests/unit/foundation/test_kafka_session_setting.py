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
