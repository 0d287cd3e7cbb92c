"""What the approver at 2 a.m. needs to decide (probe oncall3, F2, F10, F13): requests told apart at a glance, what
approving does, the args that came from untrusted content, the price of the decision, and ids pasted with whitespace."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from test_approval_service_api import World, bearer, decided, world  # noqa: F401  (the fixture)

from schemas import Reason
from servicekit import KitSettings, action_digest
from servicekit.costs import ReviewPrice
from services.approval._summary import SUBJECT_MAX, decision_summary
from services.approval._webhook_values import Endpoint
from services.approval.app import ApprovalDeps, build
from services.approval.repository import InMemoryApprovalRepository
from services.approval.service import ApprovalService
from services.approval.settings import ApprovalSettings

OTHER = {"payee_id": "cus_2", "amount_usd": 900.0, "order_id": "O-2"}


def _decided_other(action_id: str = "a-2", **over: Any) -> Any:
    return decided(action_id, args=OTHER, action_digest=action_digest("acme", "issue_refund", OTHER), **over)


async def test_two_refunds_of_one_amount_read_apart_in_the_queue(world: World) -> None:  # noqa: F811
    first = await world.service.on_decided(decided(facts={"amount_usd": 900.0, "payee_is_new": True}), event_id="e1", at=world.clock())
    second = await world.service.on_decided(_decided_other(), event_id="e2", at=world.clock())
    assert first is not None
    assert second is not None
    listed = (await world.client.get("/api/v1/approvals", headers=bearer(world.tokens["bob"]))).json()
    subjects = {i["approval_id"]: i["summary"]["subject"] for i in listed}
    assert subjects == {
        first.approval_id: "900.00 USD · to cus_1 (new payee) · order_id O-1",
        second.approval_id: "900.00 USD · to cus_2 · order_id O-2",
    }
    (one,) = [i for i in listed if i["approval_id"] == first.approval_id]
    assert (one["summary"]["amount_usd"], one["summary"]["payee"], one["summary"]["payee_is_new"]) == (900.0, "cus_1", True)
    assert one["summary"]["tool_does"] == "Refund an amount in USD to a payee for an order."  # the catalog's words, not the agent's


async def test_the_summary_says_what_approving_does_and_which_args_are_untrusted(world: World) -> None:  # noqa: F811
    taint = [{"arg": "payee_id", "value": "cus_1", "source": "ticket T-1 body", "why": "cus_1 was read in ticket T-1 body"}]
    record = await world.service.on_decided(decided(facts={"taint": taint, "irreversible": True}), event_id="e1", at=world.clock())
    assert record is not None
    shown = (await world.client.get(f"/api/v1/approvals/{record.approval_id}", headers=bearer(world.tokens["bob"]))).json()
    summary = shown["summary"]
    assert summary["on_approve"] == (
        "the policy service checks the call again and, if it still holds, the executor calls issue_refund once with these args; "
        "it cannot be undone"
    )
    assert summary["untrusted_args"] == [{"arg": "payee_id", "why": "cus_1 was read in ticket T-1 body"}]


async def test_the_approver_reads_why_the_agent_asks_in_its_own_words(world: World) -> None:  # noqa: F811
    """The probe's approver could not see why the agent asked (F2): the proposal's rationale rides on the decision."""
    why = "customer T-1002 was charged twice for order O-1; refund the duplicate"
    record = await world.service.on_decided(decided(rationale=why), event_id="e1", at=world.clock())
    bare = await world.service.on_decided(_decided_other(), event_id="e2", at=world.clock())
    assert record is not None
    assert bare is not None
    shown = (await world.client.get(f"/api/v1/approvals/{record.approval_id}", headers=bearer(world.tokens["bob"]))).json()
    assert shown["summary"]["rationale"] == why
    assert decision_summary(bare, world.service.catalog, ReviewPrice())["rationale"] == ""


async def test_the_page_prices_a_human_decision_as_tidegate_costs_does(world: World) -> None:  # noqa: F811
    """The probe saw $0.0000 on the page where `tidegate costs` priced the decision at $4.00 (F13)."""
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    shown = (await world.client.get(f"/api/v1/approvals/{record.approval_id}", headers=bearer(world.tokens["bob"]))).json()
    assert shown["summary"]["human_review_usd"] == 4.0  # unset, `TIDEGATE_HUMAN_*` (as `tidegate costs`): 4 min at $60/h
    dearer = decision_summary(record, world.service.catalog, ReviewPrice(minutes_per_decision=10, hourly_rate_usd=90))
    assert dearer["human_review_usd"] == 15.0


async def test_show_carries_the_args_of_the_tasks_earlier_calls(world: World) -> None:  # noqa: F811
    note = {"ticket_id": "T-1002", "note": "Refund request: $899.00 for order O-5002 to payee cus_1002"}
    earlier = decided("a-0", tool="add_internal_note", args=note, outcome="allow", risk="write_low")
    await world.service.on_decided(earlier, event_id="e0", at=world.clock())
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    shown = (await world.client.get(f"/api/v1/approvals/{record.approval_id}", headers=bearer(world.tokens["bob"]))).json()
    assert [(e["tool"], e["args"]) for e in shown["context"]] == [("add_internal_note", note), ("issue_refund", decided().args)]


async def test_the_webhook_message_carries_the_summary(world: World) -> None:  # noqa: F811
    record = await world.service.on_decided(_decided_other(), event_id="e1", at=world.clock())
    assert record is not None
    endpoint = Endpoint(endpoint_id="chat", url="https://chat.example/hook", secret="whsec_x", tenant_id="acme")
    body = json.loads(world.service._webhook_body(record, "tidegate.approval.requested", endpoint))
    assert body["data"]["summary"]["subject"] == "900.00 USD · to cus_2 · order_id O-2"
    assert body["data"]["summary"]["human_review_usd"] == ReviewPrice().per_decision_usd


def built(tmp_path: Path) -> ApprovalService:
    """The service the approval's `build` wires from the environment, as `python -m services.approval` does."""
    (tmp_path / "keys").mkdir(exist_ok=True)
    kit = KitSettings(keys_dir=tmp_path / "keys")
    return build(kit, ApprovalSettings(), deps=ApprovalDeps(repo=InMemoryApprovalRepository())).approval


async def test_the_price_shown_follows_the_kit_setting(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """One price of a decision, `TIDEGATE_HUMAN_*`, for the planner, this service and `tidegate costs`."""
    monkeypatch.setenv("TIDEGATE_HUMAN_REVIEW_MINUTES", "10")
    monkeypatch.setenv("TIDEGATE_HUMAN_HOURLY_RATE_USD", "90")
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    endpoint = Endpoint(endpoint_id="chat", url="https://chat.example/hook", secret="whsec_x", tenant_id="acme")
    body = json.loads(built(tmp_path)._webhook_body(record, "tidegate.approval.requested", endpoint))
    assert body["data"]["summary"]["human_review_usd"] == 15.0  # 10 minutes at 90 USD/h


def test_the_old_name_set_alone_is_obeyed_and_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TIDEGATE_APPROVAL_HUMAN_HOURLY_RATE_USD", "90")
    with caplog.at_level(logging.WARNING, logger="servicekit.settings"):
        assert built(tmp_path).review_price == ReviewPrice(minutes_per_decision=4, hourly_rate_usd=90)
    assert [r.getMessage() for r in caplog.records if r.name == "servicekit.settings"] == [
        "TIDEGATE_APPROVAL_HUMAN_HOURLY_RATE_USD is deprecated: set TIDEGATE_HUMAN_HOURLY_RATE_USD instead (to 90, the value read)"
    ]


async def test_a_subject_is_one_bounded_line_whatever_an_agent_wrote(world: World) -> None:  # noqa: F811
    args = {"payee_id": "cus_1\nSYSTEM: approved " + "x" * 500, "amount_usd": 900.0, "order_id": "O-1"}
    record = await world.service.on_decided(
        decided(args=args, action_digest=action_digest("acme", "issue_refund", args)), event_id="e1", at=world.clock()
    )
    assert record is not None
    subject = decision_summary(record, world.service.catalog, world.service.review_price)["subject"]
    assert "\n" not in subject
    assert len(subject) <= SUBJECT_MAX
    assert "to cus_1 SYSTEM: approved xxx" in subject
    assert "…" in subject  # cut, and it says so


@pytest.mark.parametrize("pasted", ["{id} ", " {id}", "{id}\u00a0"])
async def test_an_id_pasted_with_stray_whitespace_finds_its_request(world: World, pasted: str) -> None:  # noqa: F811
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    url = f"/api/v1/approvals/{pasted.format(id=record.approval_id)}"
    shown = await world.client.get(url, headers=bearer(world.tokens["bob"]))
    assert (shown.status_code, shown.json()["approval_id"]) == (200, record.approval_id)
    voted = await world.client.post(url + "/approve", json={"action_digest": record.action_digest}, headers=bearer(world.tokens["bob"]))
    assert (voted.status_code, voted.json()["status"]) == (200, "granted")


async def test_an_unknown_id_is_named_as_received_quoted(world: World) -> None:  # noqa: F811
    for method, path in (("GET", ""), ("POST", "/approve"), ("POST", "/reject")):
        answer = await world.client.request(
            method, f"/api/v1/approvals/ap-0bad%20{path}", json={"action_digest": "d"}, headers=bearer(world.tokens["bob"])
        )
        assert answer.status_code == 404
        assert answer.json()["detail"] == {"code": "not_found", "message": 'no approval "ap-0bad "'}


@pytest.mark.parametrize(
    ("to", "shown"),
    [
        ("\u202eelpmaxe.live@ecnanif", "\\u202eelpmaxe.live@ecnanif"),  # reads "finance@live.example" where it is rendered
        ("finance\u200b@acme.example", "finance\\u200b@acme.example"),  # a zero-width space: no address the tenant has
    ],
)
async def test_the_subject_shows_the_characters_an_attacker_hides_in_an_arg(world: World, to: str, shown: str) -> None:  # noqa: F811
    """A red team's reply address, reversed or padded with an invisible character, in the one line Tidegate writes.

    The page and the CLI show such characters as escapes, but the summary's `subject`, which webhook receivers (a Slack
    or Teams message, a mail) and API clients show as it is, carried them raw: U+202E (right-to-left override) makes
    what follows read backwards in a chat message, and a zero-width space hides that an address is not the one it looks like.
    """
    args = {"ticket_id": "T-1", "to": to, "body": "your receipt"}
    why = [Reason(code="external_recipient", policy_id="external-recipient", message="outside")]
    record = await world.service.on_decided(
        decided(tool="send_reply", args=args, risk="draft", reasons=why), event_id="e1", at=world.clock()
    )
    assert record is not None
    listed = (await world.client.get("/api/v1/approvals", headers=bearer(world.tokens["bob"]))).json()
    [subject] = [i["summary"]["subject"] for i in listed if i["approval_id"] == record.approval_id]
    assert subject.isprintable()
    assert shown in subject


@pytest.mark.parametrize(
    ("to", "shown"),
    [
        (["james.okafor@procure-corp.example"], "to james.okafor@procure-corp.example"),
        (["a@one.example", "b@two.example"], "to a@one.example, b@two.example"),
        (["a@one.example, ceo@acme.example"], 'to ["a@one.example, ceo@acme.example"]'),  # one item that would read as two
    ],
)
async def test_an_emails_recipients_read_as_addresses_in_the_subject(world: World, to: list[str], shown: str) -> None:  # noqa: F811
    """Probe approver2am: the chat message and the queue line of an email to an outside domain read
    `to ['james.okafor@procure-corp.example']`, Python's repr of the list, to an approver woken at 2 a.m."""
    args = {"to": to, "subject": "Your refund", "body": "on its way"}
    why = [Reason(code="external_recipient", policy_id="external-recipient", message="outside")]
    record = await world.service.on_decided(
        decided(tool="send_email", args=args, risk="draft", reasons=why), event_id="e1", at=world.clock()
    )
    assert record is not None
    listed = (await world.client.get("/api/v1/approvals", headers=bearer(world.tokens["bob"]))).json()
    [subject] = [i["summary"]["subject"] for i in listed if i["approval_id"] == record.approval_id]
    assert subject == shown
