"""A setting pydantic cannot even decode, or one valid in form that cannot be used, stops a service in one line, exit 78.

A probe found ~200-line tracebacks and exit 1 (restarted for ever by `tidegate up`) for a JSON-valued setting that is not
JSON, a `TIDEGATE_DATABASE_URL` that is not a DSN, and a `TIDEGATE_METRICS_HOST` that does not exist.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic_settings import SettingsError

from servicekit import EX_CONFIG, REPO_ROOT, settings_problems
from services.approval.settings import ApprovalSettings


def test_a_json_setting_that_is_not_json_is_named_with_the_type_it_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_APPROVAL_WEBHOOK_ALLOWED_HOSTS", "hooks.example.com")  # the docs say '["hooks.example.com"]'
    with pytest.raises(SettingsError) as caught:
        ApprovalSettings()
    assert settings_problems(caught.value) == [
        "TIDEGATE_APPROVAL_WEBHOOK_ALLOWED_HOSTS: Input should be JSON (list[str]): "
        "Expecting value: line 1 column 1 (char 0) (got 'hooks.example.com')"
    ]


def run_service(name: str, **env: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"TIDEGATE_KAFKA_BOOTSTRAP": "127.0.0.1:9"} | env  # nothing is reached: each stops first
    command = [sys.executable, "-m", "tidegate.cli", "service", "run", name]
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("service", "variable", "value", "says"),
    [
        ("planner", "TIDEGATE_PLANNER_STEP_TIMEOUTS_S", "notjson", "Input should be JSON (dict[str, float]): Expecting value"),
        ("planner", "TIDEGATE_DATABASE_URL", "notadsn", 'invalid DSN: scheme is expected to be either "postgresql" or "postgres"'),
        ("policy", "TIDEGATE_METRICS_HOST", "no-such-host.invalid", "cannot listen on 'no-such-host.invalid': no such host"),
    ],
)
def test_the_service_says_which_variable_in_one_line_and_exits_ex_config(service: str, variable: str, value: str, says: str) -> None:
    done = run_service(service, **{variable: value, "TIDEGATE_METRICS_PORT": "0"})
    assert done.returncode == EX_CONFIG, done.stderr[-3000:]  # not 1: `tidegate up` would restart it for ever
    assert "Traceback" not in done.stderr
    first, second = done.stderr.splitlines()[-2:]
    assert first == f"{service}: not started: 1 setting(s) not valid"
    assert second.startswith(f"  {variable}: {says}"), second


def test_the_approval_http_host_is_named_as_its_own_setting() -> None:
    done = run_service("approval", TIDEGATE_APPROVAL_HTTP_HOST="no-such-host.invalid", TIDEGATE_APPROVAL_HTTP_PORT="0")
    assert done.returncode == EX_CONFIG, done.stderr[-3000:]
    assert done.stderr.splitlines()[-1].startswith("  TIDEGATE_APPROVAL_HTTP_HOST: cannot listen on 'no-such-host.invalid'")
