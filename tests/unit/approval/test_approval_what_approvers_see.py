"""What the approver is shown (probe approver6 A1, A3, A6): which argument is untrusted, the order as the task read it,
a grant the policy then denied, and another approver's edit in the headline."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from test_approval_service_api import ARGS, World, bearer, decided, world  # noqa: F401  (the fixture)

from schemas import ActionResultData, Reason, ResultCost
from services.approval._record_reads import kept_result
from services.approval._summary import DECLARED_TAINT

ORDER = {"order_id": "O-1", "customer_id": "cus_1003", "payee_id": "cus_1003", "amount_usd": 900.0, "refunded_usd": 0.0}


async def shown(world: World, approval_id: str, who: str = "dan") -> dict[str, Any]:  # noqa: F811
    answer = await world.client.get(f"/api/v1/approvals/{approval_id}", headers=bearer(world.tokens[who]))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def opened(world: World, action_id: str = "a-1", **over: Any) -> str:  # noqa: F811
    record = await world.service.on_decided(decided(action_id, **over), event_id=f"d-{action_id}", at=world.clock())
    assert record is not None
    return record.approval_id


async def read_order(world: World, *, returned: dict[str, Any] | None = None) -> None:  # noqa: F811
    """The task's `lookup_order` of O-1, allowed and succeeded, a minute before the refund was proposed, kept as the service keeps it."""
    at = world.clock() - timedelta(minutes=1)
    read = decided("r-1", tool="lookup_order", args={"order_id": "O-1"}, outcome="allow", risk="read")
    await world.service.on_decided(read, event_id="d-r-1", at=at)
    result = ActionResultData(
        action_id="r-1", task_id="t-1", tenant_id="acme", tool="lookup_order", status="succeeded", attempts=1, duration_ms=3,
        result=ORDER if returned is None else returned, cost=ResultCost(usd=0.0001),
    )  # fmt: skip
    await world.service.on_result(result, event_type="tidegate.action.succeeded", event_id="r-1-ok", at=at)


# --- A1: which argument is untrusted, and whose order it is ------------------------------------------------------------


async def test_a_known_payee_named_only_by_untrusted_text_is_an_untrusted_arg(world: World) -> None:  # noqa: F811
    """The policy found no source for the value (a payee the tenant paid before) but counted it tainted: the banner names it."""
    facts = {"taint": [], "tainted_important_args": ["payee_id"], "payee": "cus_1", "payee_is_new": False}
    reasons = [Reason(code="tainted_argument", policy_id="tainted-argument", message="an important argument (payee_id) came …")]
    approval_id = await opened(world, facts=facts, reasons=reasons)
    summary = (await shown(world, approval_id))["summary"]
    assert summary["untrusted_args"] == [{"arg": "payee_id", "why": DECLARED_TAINT}]


async def test_a_finding_with_its_source_is_not_said_twice(world: World) -> None:  # noqa: F811
    why = "cus_1 was read in the task input's untrusted field 'body'"
    facts = {"taint": [{"arg": "payee_id", "value": "payee:cus_1", "why": why}], "tainted_important_args": ["payee_id", "amount_usd"]}
    summary = (await shown(world, await opened(world, facts=facts)))["summary"]
    assert summary["untrusted_args"] == [{"arg": "payee_id", "why": why}, {"arg": "amount_usd", "why": DECLARED_TAINT}]


async def test_a_refund_on_an_order_the_task_never_read_says_not_checked(world: World) -> None:  # noqa: F811
    reads = (await shown(world, await opened(world)))["record_reads"]
    assert reads["arg"] == "order_id"
    assert reads["id"] == "O-1"
    assert reads["checked"] is False
    assert reads["reads"] == []
    assert reads["said"].startswith("not checked: the task made no trusted read of order_id O-1")


async def test_the_orders_payee_as_the_task_read_it_is_shown_beside_a_refund_to_another(world: World) -> None:  # noqa: F811
    await read_order(world)  # the service keeps a trusted read's small result (`kept_result`)
    reads = (await shown(world, await opened(world)))["record_reads"]  # the refund pays cus_1; the order's payee is cus_1003
    assert reads["checked"] is True
    [read] = reads["reads"]
    assert (read["tool"], read["action_id"], read["status"], read["returned"]) == ("lookup_order", "r-1", "succeeded", ORDER)
    assert {c["arg"]: (c["call"], c["read"], c["same"]) for c in read["compared"]} == {
        "payee_id": ("cus_1", "cus_1003", False),
        "amount_usd": (900.0, 900.0, True),
        "order_id": ("O-1", "O-1", True),
    }
    assert reads["said"] == "the call differs from the read: payee_id 'cus_1' in the call, 'cus_1003' as read"


async def test_a_read_whose_result_the_service_did_not_keep_is_named_with_where_to_read_it(world: World) -> None:  # noqa: F811
    await read_order(world, returned={**ORDER, "history": "x" * 5000})  # too large to keep
    reads = (await shown(world, await opened(world)))["record_reads"]
    assert reads["checked"] is True
    assert reads["reads"][0]["returned"] is None
    assert reads["said"] == "read by lookup_order; what it returned is not kept here: `tidegate audit explain t-1`"


def test_only_a_trusted_reads_small_result_is_kept() -> None:
    from servicekit import REPO_ROOT, ToolCatalog

    catalog = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
    base = {"task_id": "t", "tenant_id": "acme", "status": "succeeded", "attempts": 1, "duration_ms": 1}
    read = ActionResultData(action_id="r", tool="lookup_order", result=ORDER, **base)
    assert kept_result(read, catalog["lookup_order"]).result == ORDER
    assert kept_result(read.model_copy(update={"result": {"rows": "x" * 5000}}), catalog["lookup_order"]).result is None
    refund = ActionResultData(action_id="w", tool="issue_refund", result={"refund_id": "rf_1"}, **base)
    assert kept_result(refund, catalog["issue_refund"]).result is None  # a write's result is the executor's to keep


# --- A3: a grant the policy then denied --------------------------------------------------------------------------------


async def test_a_grant_the_policy_denies_on_re_evaluation_says_so(world: World) -> None:  # noqa: F811
    approval_id = await opened(world)
    url = f"/api/v1/approvals/{approval_id}/approve"
    record = await world.repo.get(approval_id)
    assert record is not None
    granted = await world.client.post(url, json={"action_digest": record.action_digest}, headers=bearer(world.tokens["bob"]))
    assert granted.json()["status"] == "granted", granted.text
    assert (await shown(world, approval_id))["outcome"] is None  # nothing yet
    quorum = Reason(code="approval_quorum_not_met", policy_id="approval-quorum", message="financial needs 3 distinct approvers")
    denied = decided("a-1", outcome="deny", via="approval", approval_id=approval_id, reasons=[quorum])
    await world.service.on_decided(denied, event_id="d-a-1-again", at=world.clock())
    outcome = (await shown(world, approval_id))["outcome"]
    assert outcome["status"] == "denied_by_policy"
    assert outcome["reason"] == "approval_quorum_not_met"
    assert outcome["message"].startswith("denied by policy after the grant: approval_quorum_not_met; nothing ran")


async def test_an_allow_after_the_grant_is_not_an_outcome(world: World) -> None:  # noqa: F811
    approval_id = await opened(world)
    record = await world.repo.get(approval_id)
    assert record is not None
    url = f"/api/v1/approvals/{approval_id}/approve"
    await world.client.post(url, json={"action_digest": record.action_digest}, headers=bearer(world.tokens["bob"]))
    allowed = decided("a-1", outcome="allow", via="approval", approval_id=approval_id, reasons=[])
    await world.service.on_decided(allowed, event_id="d-a-1-again", at=world.clock())
    assert (await shown(world, approval_id))["outcome"] is None  # allowed: the call's result is what became of it


# --- A6: another approver's edit in the headline -----------------------------------------------------------------------


async def test_a_pending_edit_is_the_headline_the_queue_line_and_what_approve_does(world: World) -> None:  # noqa: F811
    approval_id = await opened(world, facts={"approvers_required": 2, "amount_usd": 900.0, "payee": "cus_1"})
    record = await world.repo.get(approval_id)
    assert record is not None
    edit = {"action_digest": record.action_digest, "edited_args": ARGS | {"amount_usd": 450.0}, "review_reason": "wrong_amount"}
    voted = await world.client.post(f"/api/v1/approvals/{approval_id}/approve", json=edit, headers=bearer(world.tokens["bob"]))
    assert voted.json()["status"] == "pending", voted.text
    summary = (await shown(world, approval_id))["summary"]
    assert summary["subject"] == "edited by bob@acme.example from 900.00 USD: 450.00 USD · to cus_1 · order_id O-1"
    assert summary["amount_usd"] == 450.0
    assert summary["edit"] == {
        "by": "bob@acme.example",
        "changed": ["amount_usd"],
        "said": "edited by bob@acme.example from 900.00 USD",
        "original_subject": "900.00 USD · to cus_1 · order_id O-1",
    }
    assert "once with the args as bob@acme.example edited them" in summary["on_approve"]
    [listed] = (await world.client.get("/api/v1/approvals", headers=bearer(world.tokens["dan"]))).json()
    assert listed["summary"]["subject"].startswith("edited by bob@acme.example from 900.00 USD: 450.00 USD")


async def test_without_an_edit_the_summary_is_the_calls(world: World) -> None:  # noqa: F811
    summary = (await shown(world, await opened(world, facts={"approvers_required": 2})))["summary"]
    assert summary["subject"] == "900.00 USD · to cus_1 · order_id O-1"
    assert summary["edit"] is None
    assert summary["on_approve"].startswith("once 2 approvers agree, the policy service checks the call again")
    assert "these args" in (summary["on_approve"])
