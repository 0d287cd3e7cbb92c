"""What-if says when a candidate's tenant entry is never read (the tenant's own record wins), and keeps a failed read failed.

Findings oncall3 F8: raising acme's threshold in a candidate pack reported "0 flips" with no word that acme's
`control.tenant` record shadows the pack's entry. And a refund recorded `record_read_failed` (its charge's read
failed) must not read as never read, nor as read, to the candidate.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from schemas import ActionDecidedData, ActionProposedData, Reason, ReasonCode
from servicekit import REPO_ROOT, KitSettings
from tidegate.ops.whatif import evaluate, load_pack, settings_ignored

KIT = KitSettings()
LIVE = load_pack(KIT.policy_dir, KIT.tools_dir)
CHARGE = "ch_O500196406704"


def candidate(tmp_path: Path, threshold_usd: float) -> Path:
    """The default pack with acme's refund threshold changed in its `settings.yaml`."""
    pack = tmp_path / "candidate"
    shutil.copytree(REPO_ROOT / "policies" / "default", pack)
    settings = yaml.safe_load((pack / "settings.yaml").read_text())
    settings["tenants"]["acme"]["refund_threshold_usd"] = threshold_usd
    (pack / "settings.yaml").write_text(yaml.safe_dump(settings))
    return pack


def proposal(tool: str, args: dict[str, Any]) -> ActionProposedData:
    return ActionProposedData(
        action_id="t-1:4", task_id="t-1", tenant_id="acme", step=4, tool=tool, args=args, proposer="tidegate/planner/playbook",
        mode="autonomous", budget_usd=5.0, confidence=1.0,
    )  # fmt: skip


def decided(p: ActionProposedData, outcome: str, code: str, **facts: Any) -> ActionDecidedData:
    return ActionDecidedData(
        action_id=p.action_id, task_id=p.task_id, tenant_id=p.tenant_id, tool=p.tool, args=p.args, action_digest="d",
        outcome=outcome, reasons=[Reason(code=ReasonCode(code), policy_id="x")], policy_version="v", latency_ms=1.0,  # type: ignore[arg-type]
        facts={"payee_is_new": False, "spend_task_usd": 0.0, "spend_tenant_usd": 0.0, "taint": [], "record_read": None} | facts,
    )  # fmt: skip


def test_a_candidate_entry_of_a_tenant_with_its_own_record_is_named_as_ignored(tmp_path: Path) -> None:
    pack = load_pack(candidate(tmp_path, threshold_usd=1000), KIT.tools_dir)
    assert settings_ignored(pack, LIVE, recorded={"acme", "globex"}) == ["acme"]  # globex's entry is unchanged
    assert settings_ignored(pack, LIVE, recorded={"globex"}) == []  # acme has no record: the candidate's entry is read
    report = evaluate(pack, [], [])
    report.settings_ignored = settings_ignored(pack, LIVE, recorded={"acme"})
    assert report.as_dict()["candidate_settings_ignored"] == ["acme"]


def test_the_pack_as_it_is_shadows_nothing_worth_saying() -> None:
    assert settings_ignored(LIVE, LIVE, recorded={"acme", "globex"}) == []


def test_a_refund_whose_charge_read_failed_stays_that_under_the_same_pack() -> None:
    refund = proposal("stripe_refund", {"amount_usd": 42.5, "charge_id": CHARGE, "payee_id": "cus_1001"})
    failed = {"error": "http_500: Stripe: Internal Server Error after 3 attempts", "source": "stripe_get_charge (action r)"}
    flow = {"calls": 1, "tools_called": ["stripe_get_charge"], "tool_errors": 1}
    then = decided(refund, "escalate", "record_read_failed", flow=flow, payee="cus_1001", amount_usd=42.5, record_id=CHARGE,
                   record_read_failed=failed)  # fmt: skip
    report = evaluate(LIVE, [refund], [then])
    assert (report.unchanged, report.reasons_changed, report.flips) == (1, 0, [])
