"""Evals score the shipped set; compare tells two policy packs apart; what-if finds the flips of a policy change."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml
from typer.testing import CliRunner

from schemas import ActionDecidedData, ActionProposedData, Reason, ReasonCode
from servicekit import REPO_ROOT, KitSettings, ToolCatalog
from tidegate.cli import app
from tidegate.ops.evals import load_set, run_eval
from tidegate.ops.strategies import make_strategy
from tidegate.ops.whatif import evaluate, load_pack

SHIPPED = REPO_ROOT / "evals" / "support_triage" / "v1"
runner = CliRunner()


def lowered_threshold(tmp_path: Path, tenant: str = "acme", usd: float = 40) -> Path:
    """A candidate pack: the default with one tenant's refund threshold lowered."""
    candidate = tmp_path / "candidate"
    shutil.copytree(REPO_ROOT / "policies" / "default", candidate)
    settings = yaml.safe_load((candidate / "settings.yaml").read_text())
    settings["tenants"][tenant]["refund_threshold_usd"] = usd
    (candidate / "settings.yaml").write_text(yaml.safe_dump(settings))
    return candidate


def test_the_shipped_set_is_large_and_covers_the_edge_cases() -> None:
    cases = load_set(SHIPPED)
    tags = {t for c in cases for t in c.tags}
    assert len(cases) >= 40
    assert {"demo", "injection", "odd_wording", "missing_fields", "ambiguous"} <= tags
    assert len({c.id for c in cases}) == len(cases)


async def test_scorecard_on_the_shipped_set() -> None:
    kit = KitSettings()
    catalog = ToolCatalog.load(kit.tools_dir)
    card = await run_eval(
        load_set(SHIPPED), strategy=make_strategy("playbook", catalog), pack=load_pack(kit.policy_dir, kit.tools_dir),
        catalog=catalog, label="default",
    )  # fmt: skip
    doc = card.as_dict()
    assert doc["cases"] >= 40
    assert doc["decision_accuracy"] >= 0.9
    assert 0 < doc["escalation_rate"] < 0.5
    assert doc["cost_per_task_usd"] > 0
    assert doc["latency_p95_ms"] >= doc["latency_p50_ms"] > 0
    # The injected refund never comes out allowed.
    injected = next(r for r in card.results if r.case.id == "demo-t-1005")
    assert [s.decision for s in injected.run.steps if s.tool == "issue_refund"] == ["deny"]


def test_compare_two_policy_dirs_shows_the_difference(tmp_path: Path) -> None:
    candidate = lowered_threshold(tmp_path)
    result = runner.invoke(app, ["eval", "compare", str(REPO_ROOT / "policies" / "default"), str(candidate), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    a, b = doc["a"], doc["b"]
    assert a["passed"] > b["passed"]
    assert b["escalation_rate"] > a["escalation_rate"]
    assert "demo-t-1001" in doc["cases_that_differ"]  # a 42.50 USD refund now escalates


def test_eval_run_prints_a_scorecard() -> None:
    result = runner.invoke(app, ["eval", "run"])
    assert result.exit_code == 0, result.output
    assert "decision accuracy" in result.output


def proposal(action: str, amount: float, payee: str = "cus_1001") -> ActionProposedData:
    return ActionProposedData(
        action_id=action, task_id=f"t-{action}", tenant_id="acme", step=1, tool="issue_refund",
        args={"payee_id": payee, "amount_usd": amount, "order_id": "O-5001", "reason": "r"}, proposer="tidegate/planner/playbook",
        mode="autonomous",
    )  # fmt: skip


def decided(p: ActionProposedData, outcome: str, code: str, payee_is_new: bool = False) -> ActionDecidedData:
    return ActionDecidedData(
        action_id=p.action_id, task_id=p.task_id, tenant_id=p.tenant_id, tool=p.tool, args=p.args, action_digest="d",
        outcome=outcome, reasons=[Reason(code=ReasonCode(code), policy_id="x")], policy_version="v", latency_ms=1.0,  # type: ignore[arg-type]
        facts={"payee": p.args["payee_id"], "payee_is_new": payee_is_new, "spend_task_usd": 0, "spend_tenant_usd": 0},
    )  # fmt: skip


def test_whatif_reports_flips_of_a_lowered_threshold(tmp_path: Path) -> None:
    kit = KitSettings()
    pack = load_pack(lowered_threshold(tmp_path), kit.tools_dir)
    small, medium, big = proposal("a1", 10.0), proposal("a2", 120.0), proposal("a3", 900.0)
    new_payee = proposal("a4", 120.0, payee="acct_new_1")
    report = evaluate(
        pack,
        [small, medium, big, new_payee],
        [decided(small, "allow", "within_threshold"), decided(medium, "allow", "within_threshold"),
         decided(big, "escalate", "needs_human_approval"), decided(new_payee, "deny", "new_payee_blocked", payee_is_new=True)],
    )  # fmt: skip
    assert report.evaluated == 4
    assert [(f.action_id, f.kind, f.reason) for f in report.flips] == [("a2", "allow→escalate", "needs_human_approval")]
    assert report.unchanged == 3
    doc = report.as_dict()
    assert doc["by_tenant"] == {"acme": {"allow→escalate": 1}}
    assert doc["by_tool"] == {"issue_refund": {"allow→escalate": 1}}
    assert doc["examples"]["allow→escalate"][0]["task_id"] == "t-a2"


def test_whatif_with_the_same_pack_flips_nothing() -> None:
    kit = KitSettings()
    pack = load_pack(kit.policy_dir, kit.tools_dir)
    p = proposal("b1", 120.0)
    assert evaluate(pack, [p], [decided(p, "allow", "within_threshold")]).flips == []
