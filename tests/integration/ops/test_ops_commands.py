"""The ops commands on real recorded traffic: what-if flips, costs with a chart, replay with no side effects."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml
from ops_traffic import Traffic, systems_fingerprint
from typer.testing import CliRunner

from servicekit import REPO_ROOT, KitSettings
from services.planner.strategies import PlaybookStrategy
from tidegate.cli import app
from tidegate.ops.replay import ReplayOptions, run_replay
from tidegate.ops.strategies import register_strategy

runner = CliRunner()


def cli(traffic: Traffic, *args: str) -> Any:
    window = ["--from", traffic.start.isoformat(), "--to", traffic.end.isoformat()]
    result = runner.invoke(app, [*args, *window, "--json"], env=traffic.env())
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def lowered_threshold(tmp_path: Path, usd: float) -> Path:
    candidate = tmp_path / "candidate"
    shutil.copytree(REPO_ROOT / "policies" / "default", candidate)
    settings = yaml.safe_load((candidate / "settings.yaml").read_text())
    settings["tenants"]["acme"]["refund_threshold_usd"] = usd
    (candidate / "settings.yaml").write_text(yaml.safe_dump(settings))
    return candidate


def test_whatif_flips_the_known_refund_when_the_threshold_is_lowered(traffic: Traffic, tmp_path: Path) -> None:
    report = cli(traffic, "whatif", "--policy", str(lowered_threshold(tmp_path, 40)))
    assert report["without_recorded_decision"] == 0
    assert report["evaluated"] >= 40
    # Only the 42.50 USD refund of T-1001 was allowed under 500 and is at or over 40 now.
    assert report["by_kind"] == {"allow→escalate": 1}
    assert report["by_tool"] == {"issue_refund": {"allow→escalate": 1}}
    assert report["by_reason"] == {"needs_human_approval": {"allow→escalate": 1}}
    example = report["examples"]["allow→escalate"][0]
    assert example["task_id"] == traffic.task_ids["T-1001"]
    assert example["args"]["amount_usd"] == 42.5


def test_whatif_with_todays_pack_flips_nothing(traffic: Traffic) -> None:
    report = cli(traffic, "whatif", "--policy", str(REPO_ROOT / "policies" / "default"))
    assert report["flips"] == 0
    assert report["unchanged"] == report["evaluated"]


def test_costs_per_outcome_with_chart(traffic: Traffic, tmp_path: Path) -> None:
    chart = tmp_path / "costs.png"
    report = cli(traffic, "costs", "--by", "workflow", "--chart", str(chart))
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (triage,) = [g for g in report["groups"] if g["name"] == "support_triage"]
    assert triage["completed"] + triage["completed_with_handoff"] + triage["failed"] == len(traffic.task_ids)
    assert triage["completed_with_handoff"] >= 4  # the refused refund, payee, deletion and bulk email were handed to a human
    assert 0 < triage["cost_per_completed_p50_usd"] <= triage["cost_per_completed_p95_usd"]
    assert triage["blocked_proposals"] >= 4  # new payee, injection, deletion, bulk email
    assert triage["rejected_proposals"] == 1
    assert triage["human_decisions"] == 2
    assert triage["human_review_usd"] == 8.0  # two decisions x 4 minutes at 60 USD/h
    assert report["source"] == "audit"
    from_topics = cli(traffic, "costs", "--by", "workflow", "--source", "topics", "--no-chart")
    assert from_topics["groups"] == report["groups"]
    by_tool = cli(traffic, "costs", "--by", "tool", "--no-chart")
    assert {"tag_ticket", "issue_refund", "draft_reply"} <= {g["name"] for g in by_tool["groups"]}


def as_operator(traffic: Traffic, ops_login: Path) -> KitSettings:
    """The traffic's kit on a machine that holds the `ops` login alone: a replay makes, runs and drops its sandbox as `ops`."""
    return traffic.kit.model_copy(update={"kafka_credentials_dir": ops_login})


async def test_replay_decides_again_and_touches_no_system(traffic: Traffic, ops_login: Path) -> None:
    before = await systems_fingerprint(traffic.kit.database_url)
    report = await run_replay(as_operator(traffic, ops_login), ReplayOptions(traffic.start, traffic.end))
    after = await systems_fingerprint(traffic.kit.database_url)
    assert after == before
    doc = report.as_dict()
    assert report.inputs >= 40
    assert doc["undecided_now"] == 0
    assert doc["changed"] == {"actions": 0, "decisions": 0, "outcomes": 0}
    assert report.refused == 0
    assert report.answered > 0
    t1001 = next(t for t in report.tasks if t.task_id == traffic.task_ids["T-1001"])
    refund = next(a for a in t1001.now.actions if a["tool"] == "issue_refund")
    # Its refund was proposed again under its action id (ops_traffic): still the one call made, as recorded, at its one cost.
    assert (refund["decision"], refund["result"]) == ("allow", "succeeded")
    assert [a["tool"] for a in t1001.now.actions].count("issue_refund") == 1
    assert t1001.then.cost_usd == t1001.now.cost_usd
    assert report.unanswerable == 0  # every call made then is answered from the record


async def test_replay_with_a_candidate_policy_shows_the_changed_decision(traffic: Traffic, tmp_path: Path) -> None:
    opts = ReplayOptions(traffic.start, traffic.end, task=traffic.task_ids["T-1001"], policy_dir=lowered_threshold(tmp_path, 40))
    report = await run_replay(traffic.kit, opts)
    (task,) = report.tasks
    assert task.decisions_changed
    refund = next(a for a in task.now.actions if a["tool"] == "issue_refund")
    assert refund["decision"] == "escalate"
    assert refund["result"] is None


class PlaybookV2(PlaybookStrategy):
    """A changed playbook: reply drafts are signed by the team."""

    async def plan(self, task: Any) -> Any:
        result = await super().plan(task)
        steps = [
            s.model_copy(update={"args": {**s.args, "body": s.args["body"] + "\n-- The Acme support team"}})
            if s.tool == "draft_reply"
            else s
            for s in result.steps
        ]
        return result.__class__(steps, result.dropped, result.error, result.detail)


async def test_replay_with_a_changed_playbook_shows_the_changed_actions(traffic: Traffic, ops_login: Path) -> None:
    register_strategy("playbook-v2", lambda catalog: PlaybookV2(catalog, name="playbook-v2"))
    before = await systems_fingerprint(traffic.kit.database_url)
    wanted = {traffic.task_ids["T-1007"], traffic.task_ids["T-1001"]}
    report = await run_replay(as_operator(traffic, ops_login), ReplayOptions(traffic.start, traffic.end, planner="playbook-v2"))
    assert await systems_fingerprint(traffic.kit.database_url) == before
    tasks = {t.task_id: t for t in report.tasks if t.task_id in wanted}
    assert set(tasks) == wanted
    for t in tasks.values():
        assert t.actions_changed
        now = {a["tool"]: a for a in t.now.actions}
        assert now["tag_ticket"]["result"] == "succeeded"  # the same call as recorded: answered from the record
        assert now["draft_reply"]["args"]["body"].endswith("-- The Acme support team")
        assert now["draft_reply"]["result"] == "unanswerable"  # a call never made before has no recorded answer
        assert (t.then.outcome, t.now.outcome) == ("completed", "failed")
        assert t.outcome_changed
    # T-1001's refund is the same call as recorded: answered from the record, still allowed.
    refund = next(a for a in tasks[traffic.task_ids["T-1001"]].now.actions if a["tool"] == "issue_refund")
    assert (refund["decision"], refund["result"]) == ("allow", "succeeded")
    assert report.unanswerable >= len(wanted)
    # T-1002's refund escalates again; the recorded grant is replayed and the recorded result answers it.
    t1002 = next(t for t in report.tasks if t.task_id == traffic.task_ids["T-1002"])
    refund = next(a for a in t1002.now.actions if a["tool"] == "issue_refund")
    assert (refund["decision"], refund["after_human"], refund["result"]) == ("escalate", "allow", "succeeded")
