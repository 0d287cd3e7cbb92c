"""What the approver at 2 a.m. meets: re-proposals, case-folded names, kill switches, links, edits and stale views."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from signers import as_operator
from test_approval_service_api import ARGS, World, bearer, decided, world  # noqa: F401  (the fixture)

from schemas import ControlKillswitch, ControlKillswitchData
from servicekit import REPO_ROOT, ControlState
from services.approval import auth, webhooks
from services.approval.repository import Endpoint

PAGE = REPO_ROOT / "services" / "approval" / "web" / "index.html"


def two_of_two(world: World) -> None:  # noqa: F811
    default = world.service.groups.default.model_copy(update={"required_approvals": {"financial": 2}})
    world.service.groups = world.service.groups.model_copy(update={"default": default})


async def token(world: World, who: str, groups: list[str], tenant: str = "acme", *, operator: bool = False) -> str:  # noqa: F811
    made = auth.new_token()
    await world.repo.add_token(auth.hash_token(made), who, tenant, groups, operator=operator)
    return made


async def link_for(world: World, approval_id: str) -> str:  # noqa: F811
    """Bob's one-time link from the last webhook message about `approval_id`."""
    world.sender.failures = 0
    await world.service.deliver_webhooks()
    bodies = [json.loads(b) for _, _, b in world.sender.got]
    body = next(b for b in reversed(bodies) if b["data"]["approval_id"] == approval_id and "links" in b["data"])
    return str(body["data"]["links"]["bob@acme.example"].split("#link=")[1])


async def approve(world: World, approval_id: str, credential: str, **body: Any) -> Any:  # noqa: F811
    return await world.client.post(f"/api/v1/approvals/{approval_id}/approve", json=body, headers=bearer(credential))


async def shown(world: World, approval_id: str, credential: str) -> dict[str, Any]:  # noqa: F811
    answer = await world.client.get(f"/api/v1/approvals/{approval_id}", headers=bearer(credential))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def test_a_reproposal_asking_more_approvers_takes_the_fresh_quorum(world: World) -> None:  # noqa: F811
    first = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert first is not None
    assert first.required_approvals == 1
    changed = decided(args=ARGS | {"payee_id": "cus_NEW"}, facts={"approvers_required": 3})
    again = await world.service.on_decided(changed, event_id="e2", at=world.clock())
    assert again is not None
    assert again.required_approvals == 3
    answer = await approve(world, first.approval_id, world.tokens["bob"], action_digest=changed.action_digest)
    assert (answer.status_code, answer.json()["status"], answer.json()["approvers"]) == (200, "pending", ["bob@acme.example"])


async def test_a_reproposal_of_another_tool_shows_and_grants_that_tool_with_its_risk(world: World) -> None:  # noqa: F811
    first = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert first is not None
    email = {"to": "x@y.example", "subject": "s", "body": "b"}
    changed = decided(tool="send_email", args=email)
    await world.service.on_decided(changed, event_id="e2", at=world.clock())
    seen = await shown(world, first.approval_id, world.tokens["bob"])
    assert (seen["tool"], seen["args"], seen["risk"], seen["action_digest"]) == ("send_email", email, "draft", changed.action_digest)
    assert seen["can_decide"] is False  # finance approves refunds, not drafts
    sue = await token(world, "sue@acme.example", ["support"])
    answer = await approve(world, first.approval_id, sue, action_digest=seen["action_digest"])
    assert (answer.status_code, answer.json()["status"], answer.json()["tool"]) == (200, "granted", "send_email")


async def test_a_reproposal_clears_the_groups_signed_with_the_votes_it_clears(world: World) -> None:  # noqa: F811
    two_of_two(world)
    carol = await token(world, "carol@acme.example", ["finance", "finance-leads"])
    first = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert first is not None
    assert (await approve(world, first.approval_id, world.tokens["bob"], action_digest=first.action_digest)).status_code == 200
    changed = decided(args=ARGS | {"amount_usd": 5000.0})
    await world.service.on_decided(changed, event_id="e2", at=world.clock())
    record = await world.repo.get(first.approval_id)
    assert record is not None
    assert (record.approvers, record.approver_groups) == ([], {})
    await approve(world, first.approval_id, carol, action_digest=changed.action_digest)
    record = await world.repo.get(first.approval_id)
    assert record is not None
    assert record.approver_groups == {"carol@acme.example": ["finance", "finance-leads"]}


async def test_one_person_in_two_spellings_counts_once(world: World) -> None:  # noqa: F811
    two_of_two(world)
    shouting = await token(world, "Bob@acme.example", ["finance"])
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    assert (await approve(world, record.approval_id, world.tokens["bob"], action_digest=record.action_digest)).status_code == 200
    seen = await shown(world, record.approval_id, shouting)
    assert (seen["can_decide"], seen["cannot_decide_because"]) == (False, "you already approved; waiting for another approver")
    again = await approve(world, record.approval_id, shouting, action_digest=record.action_digest)
    assert (again.status_code, again.json()["detail"]["code"]) == (409, "already_approved")


async def test_under_a_kill_switch_approving_is_held_and_rejecting_offered(world: World) -> None:  # noqa: F811
    world.service.control = ControlState()
    switch = ControlKillswitchData(tenant_id="acme", tool="issue_refund", active=True, reason="incident", set_by="oncall")
    await world.service.control.apply(as_operator(ControlKillswitch.build(switch, source="tidegate/cli")))
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    seen = await shown(world, record.approval_id, world.tokens["bob"])
    assert (seen["can_decide"], seen["can_reject"], seen["killswitch"]["reason"]) == (False, True, "incident")
    assert "ends in a deny" in seen["cannot_decide_because"]
    page = (await world.client.get("/")).text
    assert "Approving will not run it while the switch is set" not in page
    assert "Approving now ends in a deny that stays final" in page
    held = await approve(world, record.approval_id, world.tokens["bob"], action_digest=record.action_digest)  # over the API too
    assert (held.status_code, held.json()["detail"]["code"]) == (409, "killswitch")
    assert (await world.repo.get(record.approval_id)).status == "pending"  # type: ignore[union-attr]
    rejected = await world.client.post(f"/api/v1/approvals/{record.approval_id}/reject", json={}, headers=bearer(world.tokens["bob"]))
    assert rejected.json()["status"] == "rejected"


async def test_a_granted_message_carries_the_edits_comment_and_reason(world: World) -> None:  # noqa: F811
    await world.repo.upsert_endpoint(Endpoint("chat", "http://chat.test/hook", webhooks.new_secret(), "acme", ("bob@acme.example",)))
    world.sender.failures = 0
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    edited = ARGS | {"amount_usd": 450.0}
    body = {"action_digest": record.action_digest, "edited_args": edited, "review_reason": "wrong_amount", "comment": "half"}
    assert (await approve(world, record.approval_id, world.tokens["bob"], **body)).json()["status"] == "granted"
    await world.service.deliver_webhooks()
    granted = next(json.loads(b) for _, _, b in world.sender.got if json.loads(b)["type"] == "approval.granted")["data"]
    assert (granted["args"], granted["edited_args"], granted["comment"], granted["review_reason"]) == (ARGS, edited, "half", "wrong_amount")
    requested = next(json.loads(b) for _, _, b in world.sender.got if json.loads(b)["type"] == "approval.requested")["data"]
    assert (requested["edited_args"], requested["comment"], requested["review_reason"]) == (None, None, None)
    docs = (REPO_ROOT / "docs" / "approval.md").read_text()
    assert "edited_args, comment, review_reason, resolution, page_url" in docs
    assert 'id="d-edited"' in PAGE.read_text()


async def test_a_links_mistake_in_the_body_does_not_spend_it(world: World) -> None:  # noqa: F811
    await world.repo.upsert_endpoint(Endpoint("chat", "http://chat.test/hook", webhooks.new_secret(), "acme", ("bob@acme.example",)))
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    link = await link_for(world, record.approval_id)
    for body, code in (
        ({"edited_args": ARGS | {"amount_usd": -5}}, "invalid_args"),
        ({"review_reason": "nope", "edited_args": ARGS | {"amount_usd": 5}}, "unknown_review_reason"),
        ({"action_digest": "stale"}, "digest_mismatch"),
    ):
        answer = await approve(world, record.approval_id, link, **({"action_digest": record.action_digest} | body))
        assert answer.json()["detail"]["code"] == code
    assert (await shown(world, record.approval_id, link))["can_decide"] is True
    answer = await approve(world, record.approval_id, link, action_digest=record.action_digest)
    assert (answer.status_code, answer.json()["status"]) == (200, "granted")
    again = await approve(world, record.approval_id, link, action_digest=record.action_digest)
    assert (again.status_code, again.json()["detail"]["code"]) == (401, "link_used")
    assert "API token" in again.json()["detail"]["message"]
    assert "new link" in again.json()["detail"]["message"]


async def test_the_view_of_a_spent_link_says_it_is_spent(world: World) -> None:  # noqa: F811
    two_of_two(world)
    await world.repo.upsert_endpoint(Endpoint("chat", "http://chat.test/hook", webhooks.new_secret(), "acme", ("bob@acme.example",)))
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    link = await link_for(world, record.approval_id)
    assert (await approve(world, record.approval_id, link, action_digest=record.action_digest)).json()["status"] == "pending"
    changed = decided(args=ARGS | {"amount_usd": 950.0})  # the re-proposal clears Bob's vote, but not the link's use
    await world.service.on_decided(changed, event_id="e2", at=world.clock())
    seen = await shown(world, record.approval_id, link)
    assert (seen["can_decide"], seen["can_reject"]) == (False, False)
    assert "already used" in seen["cannot_decide_because"]


async def test_an_operator_may_reject_a_request_without_requester_from_the_view(world: World) -> None:  # noqa: F811
    operator = await token(world, "ops@example", ["admin"], "*", operator=True)
    record = await world.service.on_decided(decided(requested_by=None), event_id="e1", at=world.clock())
    assert record is not None
    seen = await shown(world, record.approval_id, operator)
    assert (seen["can_decide"], seen["can_reject"]) == (False, True)
    bob = await shown(world, record.approval_id, world.tokens["bob"])
    assert (bob["can_decide"], bob["can_reject"]) == (False, False)


async def test_edited_args_equal_to_the_call_are_a_plain_approve(world: World) -> None:  # noqa: F811
    two_of_two(world)
    carol = await token(world, "carol@acme.example", ["finance"])
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    first = await approve(world, record.approval_id, world.tokens["bob"], action_digest=record.action_digest, edited_args=dict(ARGS))
    assert (first.json()["approvers"], first.json()["edited_args"]) == (["bob@acme.example"], None)
    second = await approve(world, record.approval_id, carol, action_digest=record.action_digest)
    assert (second.json()["status"], second.json()["approvers"]) == ("granted", ["bob@acme.example", "carol@acme.example"])
    assert world.bus.events[-1][1].data.edited_args is None


async def test_a_request_past_its_expiry_shows_as_expired_before_the_sweep(world: World) -> None:  # noqa: F811
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    world.clock.now = record.expires_at + timedelta(seconds=1)
    seen = await shown(world, record.approval_id, world.tokens["bob"])
    assert (seen["status"], seen["can_decide"], seen["can_reject"]) == ("expired", False, False)
    assert (await world.client.get("/api/v1/approvals", headers=bearer(world.tokens["bob"]))).json() == []
    assert (await world.client.get("/api/v1/queue", headers=bearer(world.tokens["bob"]))).json()["pending"] == 0


async def test_already_decided_names_who_decided_and_when(world: World) -> None:  # noqa: F811
    carol = await token(world, "carol@acme.example", ["finance"])
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    await world.client.post(f"/api/v1/approvals/{record.approval_id}/reject", json={"comment": "dup"}, headers=bearer(carol))
    late = await approve(world, record.approval_id, world.tokens["bob"], action_digest=record.action_digest)
    message = late.json()["detail"]["message"]
    assert late.status_code == 409
    assert f"already rejected by carol@acme.example at {world.clock().isoformat(timespec='seconds')}" in message
    assert (await shown(world, record.approval_id, world.tokens["bob"]))["cannot_decide_because"] == message


def test_the_page_keeps_a_link_apart_from_a_token_and_reports_failed_calls() -> None:
    """The page is driven in a real browser by tests/e2e/approval; here, what it is built to do, read from its script."""
    script = PAGE.read_text()
    assert 'store.setItem(LINK, hash.get("link"))' in script  # a link never overwrites the token under tidegate.credential
    assert "That credential is not valid (unknown, revoked, expired or already used)" not in script
    assert "ask for a new link" in script  # an expired link: the server's reason and the next step
    for handler in ("""$("refresh").addEventListener("click", () => refresh())""", """failed(e, "Could not load the review reasons")"""):
        assert handler in script
    assert "The decision is recorded: say so whatever happens to the reload after it." in script
