"""What-if decides a proposal with what its task had read and done, as the recorded decision shows it.

An allow that depended on an earlier system-of-record read (a refund after its `stripe_get_charge`)
must stay an allow under the same pack; a real change of the pack must still flip it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from schemas import ActionDecidedData, ActionProposedData, Reason, ReasonCode
from servicekit import REPO_ROOT, KitSettings
from tidegate.ops.whatif import evaluate, load_pack

TASK = "t-refund-after-read"
CHARGE = "ch_O500196406704"
READ_FLOW = {
    "calls": 2, "external_sends": 0, "last_decision": "", "retries": 0, "sent_amount_cents": 0, "tool_calls": 0, "tool_errors": 0,
    "tools_called": ["zendesk_add_internal_note", "zendesk_tag_ticket"], "untrusted_read": True,
}  # fmt: skip
REFUND_FLOW = READ_FLOW | {"calls": 3, "tools_called": ["stripe_get_charge", "zendesk_add_internal_note", "zendesk_tag_ticket"]}
# the reply after the refund: four calls so far, the tag called twice (the record keeps only the total)
REPLY_FLOW = READ_FLOW | {
    "calls": 4, "sent_amount_cents": 4250, "tools_called": ["stripe_get_charge", "stripe_refund", "zendesk_tag_ticket"],
}  # fmt: skip


def proposal(step: int, tool: str, args: dict[str, Any]) -> ActionProposedData:
    return ActionProposedData(
        action_id=f"{TASK}:{step}", task_id=TASK, tenant_id="acme", step=step, tool=tool, args=args,
        proposer="tidegate/planner/playbook", mode="autonomous", budget_usd=5.0, confidence=1.0,
    )  # fmt: skip


def decided(p: ActionProposedData, outcome: str, code: str, **facts: Any) -> ActionDecidedData:
    return ActionDecidedData(
        action_id=p.action_id, task_id=p.task_id, tenant_id=p.tenant_id, tool=p.tool, args=p.args, action_digest="d",
        outcome=outcome, reasons=[Reason(code=ReasonCode(code), policy_id="x")], policy_version="v", latency_ms=1.0,  # type: ignore[arg-type]
        facts={"payee_is_new": False, "spend_task_usd": 0.0, "spend_tenant_usd": 0.0, "taint": [], "record_id": None, "record_read": None}
        | facts,
    )  # fmt: skip


def recorded(record_read: Any = None) -> tuple[list[ActionProposedData], list[ActionDecidedData]]:
    """A task that read a charge, refunded it within the threshold, then drafted a reply: all allowed, as the service decided."""
    read = proposal(3, "stripe_get_charge", {"charge_id": CHARGE})
    refund_args = {"amount_usd": 42.5, "charge_id": CHARGE, "payee_id": "cus_1001", "reason": "requested_by_customer"}
    refund = proposal(4, "stripe_refund", refund_args)
    reply = proposal(5, "zendesk_draft_reply", {"body": "Hi Maria, we have refunded 42.50 USD.", "ticket_id": 1001})
    charge = {"amount_usd": 42.5, "currency": "usd", "source": f"the result of stripe_get_charge (action {read.action_id})"}
    refund_facts = {"payee": "cus_1001", "amount_usd": 42.5, "record_id": CHARGE, "record_read": record_read or charge}
    decisions = [
        decided(read, "allow", "read_allowed", flow=READ_FLOW),
        decided(refund, "allow", "within_threshold", flow=REFUND_FLOW, **refund_facts),
        decided(reply, "allow", "draft_allowed", flow=REPLY_FLOW),
    ]
    return [read, refund, reply], decisions


def candidate(tmp_path: Path, *, threshold_usd: float | None = None, cedar: str | None = None) -> Path:
    """The default pack, with acme's refund threshold changed and/or one more policy file."""
    pack = tmp_path / "candidate"
    shutil.copytree(REPO_ROOT / "policies" / "default", pack)
    if threshold_usd is not None:
        settings = yaml.safe_load((pack / "settings.yaml").read_text())
        settings["tenants"]["acme"]["refund_threshold_usd"] = threshold_usd
        (pack / "settings.yaml").write_text(yaml.safe_dump(settings))
    if cedar is not None:
        (pack / "candidate.cedar").write_text(cedar)
    return pack


def test_an_allow_that_depended_on_an_earlier_read_does_not_flip_under_the_same_pack() -> None:
    kit = KitSettings()
    proposals, decisions = recorded()
    report = evaluate(load_pack(kit.policy_dir, kit.tools_dir), proposals, decisions)
    assert [(f.tool, f.kind, f.now_reasons) for f in report.flips] == []
    assert (report.evaluated, report.unchanged, report.reasons_changed) == (3, 3, 0)
    assert report.human_load() == {"then": 0.0, "now": 0.0}


def test_a_lowered_threshold_still_flips_the_refund_for_its_own_reason(tmp_path: Path) -> None:
    kit = KitSettings()
    proposals, decisions = recorded()
    report = evaluate(load_pack(candidate(tmp_path, threshold_usd=40), kit.tools_dir), proposals, decisions)
    assert [(f.tool, f.kind, f.now_reasons) for f in report.flips] == [("stripe_refund", "allow→escalate", ["needs_human_approval"])]


def test_a_rule_on_the_flow_sees_the_recorded_flow(tmp_path: Path) -> None:
    """`flow.calls` and `flow.tools_called` as the service computed them: only the reply had made four calls."""
    rule = (
        '@id("long-task")\n@outcome("escalate")\n@reason("needs_human_approval")\n'
        "permit (principal, action, resource)\n"
        'when { context.writes && context.flow.calls >= 4 && !context.flow.tools_called.contains("zendesk_add_internal_note") }\n'
        "unless { context.approval.granted };\n"
    )
    kit = KitSettings()
    proposals, decisions = recorded()
    report = evaluate(load_pack(candidate(tmp_path, cedar=rule), kit.tools_dir), proposals, decisions)
    assert [(f.tool, f.kind) for f in report.flips] == [("zendesk_draft_reply", "allow→escalate")]


def test_a_recorded_read_that_is_not_a_figure_is_skipped_not_guessed() -> None:
    kit = KitSettings()
    proposals, decisions = recorded(record_read={"amount_usd": "lots", "currency": "usd"})
    report = evaluate(load_pack(kit.policy_dir, kit.tools_dir), proposals, decisions)
    assert report.skipped.counts == {"not_decidable": 1}
    assert (report.evaluated, report.flips) == (2, [])
