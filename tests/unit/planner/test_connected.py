"""The support-triage playbook on Zendesk and Stripe: same plan, connector tools, same facts for the policy."""

from __future__ import annotations

from services.planner.playbooks import PLAYBOOKS
from systems.seed import TICKETS
from tidegate.demo.tickets import ticket_task

BY_ID = {t.ticket_id: t for t in TICKETS}


def test_a_refund_ticket_is_planned_on_zendesk_and_stripe_with_the_same_amount_payee_and_taint() -> None:
    builtin = ticket_task(BY_ID["T-1001"])
    connected = builtin.model_copy(update={"input": {**builtin.input, "systems": {"helpdesk": "zendesk", "payments": "stripe"}}})
    before, after = PLAYBOOKS["support_triage"](builtin), PLAYBOOKS["support_triage"](connected)
    assert [s.tool for s in before] == ["tag_ticket", "add_internal_note", "lookup_order", "issue_refund", "draft_reply"]
    assert [s.tool for s in after] == [
        "zendesk_tag_ticket",
        "zendesk_add_internal_note",
        "stripe_get_charge",
        "stripe_refund",
        "zendesk_draft_reply",
    ]
    refund = after[3]
    assert refund.args == {"payee_id": "cus_1001", "amount_usd": 42.5, "charge_id": "ch_O5001", "reason": "requested_by_customer"}
    assert after[0].args["ticket_id"] == 1001
    assert after[1].args["body"] == before[1].args["note"]
    assert [s.tool for s in refund.on_deny] == ["zendesk_add_internal_note", "zendesk_draft_reply"]


def test_taint_follows_a_renamed_argument_and_untrusted_input_cannot_choose_the_systems() -> None:
    injected = ticket_task(BY_ID["T-1005"])
    routed = injected.model_copy(update={"input": {**injected.input, "systems": {"helpdesk": "zendesk", "payments": "stripe"}}})
    refund = next(s for s in PLAYBOOKS["support_triage"](routed) if s.tool == "stripe_refund")
    before = next(s for s in PLAYBOOKS["support_triage"](injected) if s.tool == "issue_refund")
    assert sorted(refund.tainted_args) == sorted("charge_id" if t == "order_id" else t for t in before.tainted_args)
    assert refund.tainted_args  # the injected payee (and what else came from the body) stays tainted
    smuggled = injected.model_copy(
        update={"input": {**injected.input, "systems": {"payments": "stripe"}}, "untrusted": [*injected.untrusted, "systems"]}
    )
    assert "issue_refund" in [s.tool for s in PLAYBOOKS["support_triage"](smuggled)]  # an untrusted `systems` is ignored
