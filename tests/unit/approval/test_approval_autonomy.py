"""The earn-trust loop at the approval service: rejection reasons signed in the decision, the report, the queue against the SLO, undo."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from signers import as_operator
from test_approval_service_api import World, bearer, decided, world  # noqa: F401  (the fixture)

from schemas import ActionDecided, ControlTenant, ControlTenantData
from servicekit import REPO_ROOT, ControlState, Keyring, approval_document


async def _pending(w: World, action_id: str = "a-1") -> str:
    record = await w.service.on_decided(decided(action_id), event_id=f"e-{action_id}", at=w.clock())
    assert record is not None
    return record.approval_id


async def test_a_reject_carries_its_reason_signed_in_the_decision(world: World, tmp_path: Path) -> None:  # noqa: F811
    approval_id = await _pending(world)
    body = {"review_reason": "wrong_amount", "comment": "the order was 90, not 900"}
    answer = await world.client.post(f"/api/v1/approvals/{approval_id}/reject", json=body, headers=bearer(world.tokens["bob"]))
    assert answer.status_code == 200, answer.text
    assert answer.json()["review_reason"] == "wrong_amount"
    _, event = world.bus.events[-1]
    data = event.data
    assert (event.type, data.review_reason, data.comment) == ("tidegate.approval.rejected", "wrong_amount", body["comment"])
    keys = Keyring.load(tmp_path, "approval")
    assert keys.verify(data.key_id, approval_document(event.type, data), data.signature)
    relabelled = data.model_copy(update={"review_reason": "should_not_need_approval"})  # a reason changed on the way is caught
    assert not keys.verify(data.key_id, approval_document(event.type, relabelled), data.signature)


async def test_an_edit_carries_its_reason_and_a_plain_approval_refuses_one_that_says_the_call_is_wrong(world: World) -> None:  # noqa: F811
    """A reason that says the call is wrong cannot ride on an unchanged approval: it was dropped in silence, now it is a 422."""
    edited, plain = await _pending(world, "a-1"), await _pending(world, "a-2")
    digest = (await world.client.get(f"/api/v1/approvals/{edited}", headers=bearer(world.tokens["bob"]))).json()["action_digest"]
    body = {"action_digest": digest, "edited_args": {"payee_id": "cus_1", "amount_usd": 90.0, "order_id": "O-1"}}
    ok = await world.client.post(
        f"/api/v1/approvals/{edited}/approve", json=body | {"review_reason": "wrong_amount"}, headers=bearer(world.tokens["bob"])
    )
    digest = (await world.client.get(f"/api/v1/approvals/{plain}", headers=bearer(world.tokens["bob"]))).json()["action_digest"]
    refused = await world.client.post(
        f"/api/v1/approvals/{plain}/approve",
        json={"action_digest": digest, "review_reason": "wrong_amount"},
        headers=bearer(world.tokens["bob"]),
    )
    assert ok.json()["review_reason"] == "wrong_amount"
    assert (refused.status_code, refused.json()["detail"]["code"]) == (422, "reason_not_for_approve")
    assert "takes only should_not_need_approval" in refused.json()["detail"]["message"]
    still = (await world.client.get(f"/api/v1/approvals/{plain}", headers=bearer(world.tokens["bob"]))).json()
    assert (still["status"], still["approvers"]) == ("pending", [])  # nothing was counted


async def test_an_approver_says_an_escalation_was_needless_when_approving_it_unchanged(world: World, tmp_path: Path) -> None:  # noqa: F811
    """Governance probe F1: `should_not_need_approval` on a plain approve is kept, signed, and counted by both reports."""
    from services.approval import review_report, reviews_from_events
    from services.policy import TenantSettings
    from tidegate.ops.autonomy import autonomy_report
    from tidegate.ops.whatif import load_pack

    approval_id = await _pending(world)
    who = bearer(world.tokens["bob"])
    digest = (await world.client.get(f"/api/v1/approvals/{approval_id}", headers=who)).json()["action_digest"]
    body = {"action_digest": digest, "review_reason": "should_not_need_approval", "comment": "known customer, order read"}
    answer = await world.client.post(f"/api/v1/approvals/{approval_id}/approve", json=body, headers=who)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["status"], answer.json()["review_reason"]) == ("granted", "should_not_need_approval")
    _, event = world.bus.events[-1]
    data = event.data
    assert (event.type, data.edited_args, data.review_reason) == ("tidegate.approval.granted", None, "should_not_need_approval")
    assert [v.review_reason for v in data.votes] == ["should_not_need_approval"]
    keys = Keyring.load(tmp_path, "approval")
    assert keys.verify(data.key_id, approval_document(event.type, data), data.signature)
    assert not keys.verify(data.key_id, approval_document(event.type, data.model_copy(update={"review_reason": None})), data.signature)

    page = (await world.client.get("/api/v1/report", headers=who)).json()
    assert page["reasons"]["reason"]["all"] == {"should_not_need_approval": 1}
    assert page["reasons"]["tool"]["issue_refund"] == {"should_not_need_approval": 1}
    published = [e for _, e in world.bus.events]
    cli = review_report(reviews_from_events(published))  # what `tidegate approvals report` counts
    assert cli["reasons"]["reason"]["all"] == {"should_not_need_approval": 1}
    [example] = cli["examples"]["should_not_need_approval"]
    assert (example["outcome"], example["comment"]) == ("approved", "known customer, order read")
    escalated = ActionDecided.build(decided(), source="tidegate/policy")
    pack = load_pack(REPO_ROOT / "policies" / "default", REPO_ROOT / "catalog" / "tools")
    rows = autonomy_report([escalated, *published], lambda tenant: TenantSettings(), pack).as_dict()["rows"]
    assert [(r["trigger"], r["approved"], r["should_not_need_approval"]) for r in rows] == [("needs_human_approval", 1, 1)]


async def test_a_reason_outside_the_taxonomy_is_refused_and_a_tenant_may_add_its_own(world: World) -> None:  # noqa: F811
    approval_id = await _pending(world)
    url, who = f"/api/v1/approvals/{approval_id}/reject", bearer(world.tokens["bob"])
    refused = await world.client.post(url, json={"review_reason": "duplicate_ticket"}, headers=who)
    assert refused.status_code == 422
    assert refused.json()["detail"]["code"] == "unknown_review_reason"
    world.service.control = ControlState()
    settings = {"review_reasons": {"duplicate_ticket": "the ticket was handled already"}}
    record = ControlTenant.build(ControlTenantData(tenant_id="acme", settings=settings, set_by="admin"), source="cli")
    await world.service.control.apply(as_operator(record))
    listed = (await world.client.get("/api/v1/review-reasons", headers=who)).json()
    assert {"wrong_recipient", "wrong_amount", "other", "duplicate_ticket"} <= set(listed)
    accepted = await world.client.post(url, json={"review_reason": "duplicate_ticket"}, headers=who)
    assert accepted.status_code == 200, accepted.text


async def test_an_approver_sees_how_old_the_queue_is_and_what_is_past_the_slo(world: World) -> None:  # noqa: F811
    await _pending(world, "a-1")
    world.clock.now += timedelta(seconds=world.service.settings.decision_slo_s + 60)
    await _pending(world, "a-2")
    world.clock.now += timedelta(seconds=30)
    queue = (await world.client.get("/api/v1/queue", headers=bearer(world.tokens["bob"]))).json()
    assert (queue["pending"], queue["past_slo"]) == (2, 1)
    assert queue["oldest_s"] == world.service.settings.decision_slo_s + 90
    assert queue["by_risk"]["financial"]["pending"] == 2


async def test_the_report_counts_reasons_like_a_bug_tracker_and_measures_the_humans(world: World) -> None:  # noqa: F811
    who = bearer(world.tokens["bob"])
    for n, reason in enumerate(["wrong_amount", "wrong_amount", None]):
        approval_id = await _pending(world, f"r-{n}")
        world.clock.now += timedelta(seconds=120)
        body = {"review_reason": reason} if reason else {}
        assert (await world.client.post(f"/api/v1/approvals/{approval_id}/reject", json=body, headers=who)).status_code == 200
    fast = await _pending(world, "g-1")
    digest = (await world.client.get(f"/api/v1/approvals/{fast}", headers=who)).json()["action_digest"]
    world.clock.now += timedelta(seconds=2)  # approved in two seconds: a rubber-stamp signal
    await world.client.post(f"/api/v1/approvals/{fast}/approve", json={"action_digest": digest}, headers=who)
    report = (await world.client.get("/api/v1/report", headers=who)).json()
    assert report["outcomes"] == {"rejected": 3, "approved": 1}
    assert report["reasons"]["reason"]["all"] == {"wrong_amount": 2, "(no reason given)": 1}
    assert report["reasons"]["tool"]["issue_refund"]["wrong_amount"] == 2
    assert report["reasons"]["policy"]["refund-threshold"]["wrong_amount"] == 2
    [example, _] = report["examples"]["wrong_amount"]
    assert example["explain"] == "tidegate audit explain t-1"
    assert report["rates"]["reject"] == 0.75
    assert report["time_to_decision_s"]["by_risk"]["financial"]["p50"] == 120.0
    assert report["rubber_stamp"]["fast_approvals"] == 1


def _succeeded(action_id: str, tenant: str, undo: Any) -> Any:
    from schemas import ActionResultData

    return ActionResultData(
        action_id=action_id,
        task_id="t-9",
        tenant_id=tenant,
        step=3,
        tool="tag_ticket",
        status="succeeded",
        attempts=1,
        duration_ms=2,
        undo=undo,
    )


async def test_an_approver_proposes_an_undo_that_policy_decides_and_only_in_their_tenant(world: World) -> None:  # noqa: F811
    from schemas import UndoPlan

    ready = UndoPlan(status="ready", tool="untag_ticket", args={"ticket_id": "T-1", "tags": ["refund"]})
    from schemas import ActionSucceeded

    irreversible = UndoPlan(status="irreversible", message="send a correction")
    for action_id, tenant, plan in (("a-ours", "acme", ready), ("a-theirs", "globex", ready), ("a-sent", "acme", irreversible)):
        await world.receive(ActionSucceeded.build(_succeeded(action_id, tenant, plan), source="tidegate/executor"))
    who = bearer(world.tokens["bob"])

    answer = await world.client.post("/api/v1/actions/a-ours/undo", headers=who)
    assert answer.status_code == 200, answer.text
    topic, event = world.bus.events[-1]
    assert (topic, event.type) == ("actions.proposed", "tidegate.action.proposed")
    assert (event.data.tool, event.data.undoes, event.data.requested_by, event.data.action_id) == (
        "untag_ticket",
        "a-ours",
        "bob@acme.example",
        "undo-a-ours",
    )
    published = len(world.bus.events)
    other_tenant = await world.client.post("/api/v1/actions/a-theirs/undo", headers=who)
    anonymous = await world.client.post("/api/v1/actions/a-ours/undo")
    refused = await world.client.post("/api/v1/actions/a-sent/undo", headers=who)
    assert (other_tenant.status_code, anonymous.status_code, refused.status_code) == (404, 401, 422)
    assert refused.json()["detail"]["code"] == "undo_irreversible"
    assert "send a correction" in refused.json()["detail"]["message"]
    assert len(world.bus.events) == published  # nothing proposed for any of them
