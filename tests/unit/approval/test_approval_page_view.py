"""What the approver page is given to show a request safely: the key args first, and why a credential cannot decide."""

from __future__ import annotations

from datetime import timedelta

from test_approval_service_api import World, bearer, decided, world  # noqa: F401  (the fixture)

from servicekit import REPO_ROOT, ToolCatalog, action_digest
from services.approval import auth
from services.approval._view_args import key_args

MAIL = {"to": ["ceo@\u0430cme.example"], "subject": "Quarterly numbers", "body": "Hi, attached.\u202e\ngnissim si tnemhcatta\u202c"}


def test_key_args_are_the_args_the_catalog_facts_name_in_order() -> None:
    catalog = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
    assert key_args(catalog, "issue_refund") == ["amount_usd", "payee_id", "order_id"]
    assert key_args(catalog, "send_email") == ["to"]
    assert key_args(catalog, "no_such_tool") == []
    assert key_args(None, "issue_refund") == []


async def test_the_view_names_the_key_args_so_free_text_cannot_come_first(world: World) -> None:  # noqa: F811
    args = {"reason": "Refund \u202e0.59$ 05 USD\u202c approved by CFO", "payee_id": "cus_1", "amount_usd": 9500.0, "order_id": "O-1"}
    record = await world.service.on_decided(decided(args=args), event_id="e1", at=world.clock())
    mail_decided = decided("a-2", tool="send_email", args=MAIL, action_digest=action_digest("acme", "send_email", MAIL))
    mail = await world.service.on_decided(mail_decided, event_id="e2", at=world.clock())
    assert record is not None
    assert mail is not None
    shown = (await world.client.get(f"/api/v1/approvals/{record.approval_id}", headers=bearer(world.tokens["bob"]))).json()
    assert shown["key_args"] == ["amount_usd", "payee_id", "order_id"]
    assert shown["args"] == args  # the call itself is exact: the page escapes what it shows, never what it sends back
    listed = (await world.client.get("/api/v1/approvals", headers=bearer(world.tokens["bob"]))).json()
    assert {i["tool"]: i["key_args"] for i in listed} == {"issue_refund": ["amount_usd", "payee_id", "order_id"], "send_email": ["to"]}


async def test_a_spent_link_says_link_used_as_a_code_the_page_acts_on(world: World) -> None:  # noqa: F811
    record = await world.service.on_decided(decided(facts={"approvers_required": 2}), event_id="e1", at=world.clock())
    assert record is not None
    assert record.required_approvals == 2
    link = auth.issue_link(
        world.service.key,
        approval_id=record.approval_id,
        approver="bob@acme.example",
        tenant_id="acme",
        expires_at=world.clock() + timedelta(minutes=5),
    )
    url = f"/api/v1/approvals/{record.approval_id}"
    fresh = (await world.client.get(url, headers=bearer(link))).json()
    assert (fresh["can_decide"], fresh["cannot_decide_code"]) == (True, None)
    voted = await world.client.post(f"{url}/approve", json={"action_digest": record.action_digest}, headers=bearer(link))
    assert voted.json()["status"] == "pending"
    spent = (await world.client.get(url, headers=bearer(link))).json()
    assert (spent["can_decide"], spent["cannot_decide_code"]) == (False, "link_used")
    own = (await world.client.get(url, headers=bearer(world.tokens["alice"]))).json()
    assert own["cannot_decide_code"] == "four_eyes"
