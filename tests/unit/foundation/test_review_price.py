"""One price of a human decision, `TIDEGATE_HUMAN_REVIEW_MINUTES` and `TIDEGATE_HUMAN_HOURLY_RATE_USD`, read by every part.

The planner's and the approval service's own names (`TIDEGATE_<SERVICE>_HUMAN_*`) are deprecated: set alone they are obeyed
with a warning; set beside the new name with another value, the service does not start (exit 78) and says both values.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings
from typer.testing import CliRunner

import schemas as s
import tidegate.ops.recorded
from servicekit import EX_CONFIG, REPO_ROOT, KitSettings
from servicekit.costs import ReviewPrice
from servicekit.settings import SettingNotUsable, review_price
from services.approval.settings import ApprovalSettings
from services.planner.settings import PlannerSettings
from tidegate.cli import app
from tidegate.ops.recorded import Recorded, Window

SERVICES: dict[str, type[BaseSettings]] = {"planner": PlannerSettings, "approval": ApprovalSettings}


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize(
    ("env", "price", "warned"),
    [
        ({}, ReviewPrice(4, 60), False),
        ({"TIDEGATE_HUMAN_REVIEW_MINUTES": "10", "TIDEGATE_HUMAN_HOURLY_RATE_USD": "90"}, ReviewPrice(10, 90), False),
        ({"TIDEGATE_{S}_HUMAN_REVIEW_MINUTES": "10"}, ReviewPrice(10, 60), True),  # a deployment that set the old name
        ({"TIDEGATE_{S}_HUMAN_REVIEW_MINUTES": "4"}, ReviewPrice(4, 60), True),  # the old default, set: obeyed as set
        ({"TIDEGATE_{S}_HUMAN_HOURLY_RATE_USD": "90", "TIDEGATE_HUMAN_HOURLY_RATE_USD": "90"}, ReviewPrice(4, 90), True),
    ],
    ids=["unset", "new", "old-alone", "old-alone-at-the-default", "old-and-new-agree"],
)
def test_the_price_of_a_decision_is_the_kit_setting_or_a_deprecated_name_alone(
    service: str, env: dict[str, str], price: ReviewPrice, warned: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name.format(S=service.upper()), value)
    with caplog.at_level("WARNING", logger="servicekit.settings"):
        assert review_price(KitSettings(), SERVICES[service]()) == price
    said = [r.getMessage() for r in caplog.records if r.name == "servicekit.settings"]
    assert bool(said) == warned
    assert all(f"TIDEGATE_{service.upper()}_HUMAN_" in line and "is deprecated: set TIDEGATE_HUMAN_" in line for line in said)


@pytest.mark.parametrize("service", SERVICES)
def test_an_old_name_that_disagrees_with_the_new_one_is_refused_with_both_values(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"TIDEGATE_{service.upper()}_HUMAN_REVIEW_MINUTES", "5")
    monkeypatch.setenv("TIDEGATE_HUMAN_REVIEW_MINUTES", "4")  # set, though to the default: someone meant it
    with pytest.raises(SettingNotUsable) as refused:
        review_price(KitSettings(), SERVICES[service]())
    old, new = f"TIDEGATE_{service.upper()}_HUMAN_REVIEW_MINUTES", "TIDEGATE_HUMAN_REVIEW_MINUTES"
    assert str(refused.value) == f"{old} (5) and {new} (4) disagree: {old} is deprecated, set {new} alone"


@pytest.mark.parametrize("service", SERVICES)
def test_the_service_refusing_a_disagreement_exits_ex_config_naming_both(service: str) -> None:
    old = f"TIDEGATE_{service.upper()}_HUMAN_HOURLY_RATE_USD"
    env = os.environ | {"TIDEGATE_KAFKA_BOOTSTRAP": "127.0.0.1:9", old: "90", "TIDEGATE_HUMAN_HOURLY_RATE_USD": "75"}  # nothing reached
    command = [sys.executable, "-m", "tidegate.cli", "service", "run", service]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == EX_CONFIG, done.stderr[-3000:]  # not 1: `tidegate up` does not restart what a person must fix
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-2:] == [
        f"{service}: not started: 1 setting(s) not valid",
        f"  {old} (90) and TIDEGATE_HUMAN_HOURLY_RATE_USD (75) disagree: {old} is deprecated, set TIDEGATE_HUMAN_HOURLY_RATE_USD alone",
    ]


def one_human_decision() -> Window:
    granted = s.ApprovalData(
        approval_id="ap", action_id="a", task_id="t1", tenant_id="acme", tool="issue_refund", args={}, action_digest="d",
        approvers=["bob@acme.example"], expires_at=datetime(2026, 11, 24, 11, 0, tzinfo=UTC),
    )  # fmt: skip
    return Window([Recorded("approvals", 0, 0, 0, s.ApprovalGranted.build(granted, source="tidegate/approval"))])


@pytest.mark.parametrize(
    ("env", "options", "minutes", "rate", "usd"),
    [
        ({}, [], 4, 60, 4.0),
        ({"TIDEGATE_HUMAN_REVIEW_MINUTES": "10", "TIDEGATE_HUMAN_HOURLY_RATE_USD": "90"}, [], 10, 90, 15.0),
        ({"TIDEGATE_HUMAN_REVIEW_MINUTES": "10", "TIDEGATE_HUMAN_HOURLY_RATE_USD": "90"}, ["--review-minutes", "2"], 2, 90, 3.0),
        ({"TIDEGATE_HUMAN_REVIEW_MINUTES": "10"}, ["--rate", "30"], 10, 30, 5.0),
    ],
    ids=["unset", "the-setting", "an-option-over-it", "the-other-option"],
)
def test_tidegate_costs_prices_a_decision_at_the_setting_unless_an_option_says(
    env: dict[str, str], options: list[str], minutes: float, rate: float, usd: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def recorded_window(kit: Any, t0: Any, t1: Any, **_: Any) -> Window:
        return one_human_decision()

    monkeypatch.setattr(tidegate.ops.recorded, "recorded_window", recorded_window)
    result = CliRunner().invoke(app, ["costs", "--source", "topics", "--no-chart", "--json", *options], env=env)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["review_minutes_per_decision"], doc["review_hourly_rate_usd"]) == (minutes, rate)
    (group,) = doc["groups"]
    assert (group["human_decisions"], group["human_review_usd"]) == (1, usd)


def test_tidegate_costs_writes_no_chart_unless_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from a checkout, `costs` used to leave `tidegate-costs.png` behind; a file appears only where `--chart` says."""

    async def recorded_window(kit: Any, t0: Any, t1: Any, **_: Any) -> Window:
        return one_human_decision()

    monkeypatch.setattr(tidegate.ops.recorded, "recorded_window", recorded_window)
    monkeypatch.chdir(tmp_path)
    plain = CliRunner().invoke(app, ["costs", "--source", "topics", "--json"])
    assert plain.exit_code == 0, plain.output
    assert "chart" not in json.loads(plain.stdout)
    assert list(tmp_path.iterdir()) == []
    asked = CliRunner().invoke(app, ["costs", "--source", "topics", "--json", "--chart", "mine.png"])
    assert asked.exit_code == 0, asked.output
    assert json.loads(asked.stdout)["chart"].endswith("mine.png")
    assert [p.name for p in tmp_path.iterdir()] == ["mine.png"]
