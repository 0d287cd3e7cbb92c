"""The planner prices a human touch at the kit's one price of a decision (`TIDEGATE_HUMAN_*`); its own old names still work."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from servicekit import KitSettings
from servicekit.costs import ReviewPrice
from servicekit.settings import SettingNotUsable
from services.planner.app import PlannerDeps, build
from services.planner.repository import InMemoryTaskRepository
from services.planner.settings import PlannerSettings
from services.planner.task_state import CostRates
from systems.seed import TICKETS
from tidegate.demo.tickets import ticket_task


def built_rates(tmp_path: Path) -> CostRates:
    """The rates the planner's `build` wires from the environment, as `python -m services.planner` does."""
    (tmp_path / "keys").mkdir(exist_ok=True)
    process = build(KitSettings(keys_dir=tmp_path / "keys"), PlannerSettings(), deps=PlannerDeps(repo=InMemoryTaskRepository()))
    return process.planner.rates


async def test_a_task_s_human_review_follows_the_kit_setting(harness_priced: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_HUMAN_REVIEW_MINUTES", "10")
    monkeypatch.setenv("TIDEGATE_HUMAN_HOURLY_RATE_USD", "90")
    harness = harness_priced(built_rates(tmp_path))
    (ticket,) = [t for t in TICKETS if t.ticket_id == "T-1002"]
    await harness.submit(ticket_task(ticket, task_id="t-T-1002"))
    for _ in range(3):
        await harness.run_allowed(harness.last())
    refund = harness.last()
    await harness.decide(refund, "escalate", "needs_human_approval")
    await harness.approval(refund, "requested")
    await harness.approval(refund, "granted", approvers=["bob@acme.example"])
    await harness.decide(refund, "allow", "approved_by_human", via="approval")
    await harness.result(refund, usd=0.01)
    await harness.run_allowed(harness.last())
    [outcome] = harness.outcomes()
    assert outcome.data.human_touches == 1
    assert outcome.data.cost.human_review == pytest.approx(15.0)  # 10 minutes at 90 USD/h, not the default 4 at 60


def test_the_old_name_set_alone_is_obeyed_and_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TIDEGATE_PLANNER_HUMAN_REVIEW_MINUTES", "10")
    with caplog.at_level(logging.WARNING, logger="servicekit.settings"):
        assert built_rates(tmp_path).review == ReviewPrice(minutes_per_decision=10, hourly_rate_usd=60)
    assert [r.getMessage() for r in caplog.records if r.name == "servicekit.settings"] == [
        "TIDEGATE_PLANNER_HUMAN_REVIEW_MINUTES is deprecated: set TIDEGATE_HUMAN_REVIEW_MINUTES instead (to 10, the value read)"
    ]


def test_the_old_name_disagreeing_with_the_new_one_stops_the_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_PLANNER_HUMAN_HOURLY_RATE_USD", "90")
    monkeypatch.setenv("TIDEGATE_HUMAN_HOURLY_RATE_USD", "75")
    with pytest.raises(SettingNotUsable) as refused:
        built_rates(tmp_path)
    assert str(refused.value) == (
        "TIDEGATE_PLANNER_HUMAN_HOURLY_RATE_USD (90) and TIDEGATE_HUMAN_HOURLY_RATE_USD (75) disagree: "
        "TIDEGATE_PLANNER_HUMAN_HOURLY_RATE_USD is deprecated, set TIDEGATE_HUMAN_HOURLY_RATE_USD alone"
    )
