"""A service's log lines are stamped in UTC (ISO 8601, `Z`) whatever the host's TZ, as `tidegate up` stamps its own, and can be
JSON, one object a line with the traceback inside (`TIDEGATE_LOG_FORMAT=json`).

A probe on a host in New York saw services log "2026-12-04 21:43:50,714" at 02:43:50 UTC, beside supervisor lines in UTC.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from servicekit import REPO_ROOT, KitSettings

LOGS = """
import logging
from servicekit.runner import configure_logging
configure_logging("INFO", sys.argv[1])
log = logging.getLogger("tidegate.test")
log.info("started")
try:
    raise ValueError("boom")
except ValueError:
    log.exception("step failed")
"""


def logged(log_format: str) -> list[str]:
    env = os.environ | {"TZ": "America/New_York"}  # five hours from UTC in winter, four in summer
    done = subprocess.run(
        [sys.executable, "-c", f"import sys\n{LOGS}", log_format], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stderr.splitlines()


def near_now(stamp: str) -> bool:
    at = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return abs(datetime.now(UTC) - at) < timedelta(minutes=5)


def test_text_lines_are_stamped_in_utc_whatever_the_hosts_zone() -> None:
    lines = logged("text")
    first = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) INFO tidegate\.test: started", lines[0])
    assert first is not None, lines[0]
    assert near_now(first[1]), first[1]
    assert lines[1].endswith(" ERROR tidegate.test: step failed")
    assert lines[-1] == "ValueError: boom"  # the traceback on the lines after it, as before


def test_json_lines_are_one_object_each_with_the_traceback_inside() -> None:
    lines = logged("json")
    assert len(lines) == 2, lines
    started, failed = (json.loads(line) for line in lines)
    assert {k: started[k] for k in ("level", "logger", "message")} == {"level": "INFO", "logger": "tidegate.test", "message": "started"}
    assert near_now(started["time"]), started["time"]
    assert failed["message"] == "step failed"
    assert failed["exception"].startswith("Traceback (most recent call last):")
    assert failed["exception"].endswith("ValueError: boom")


def test_the_format_is_a_setting_in_any_case_and_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    assert KitSettings().log_format == "text"
    monkeypatch.setenv("TIDEGATE_LOG_FORMAT", "JSON")
    assert KitSettings().log_format == "json"
    monkeypatch.setenv("TIDEGATE_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="log_format"):
        KitSettings()
