"""Two approvers, one request: a co-approver's edit is never silently discarded, and every approver's words are kept.

Acting as bob (who corrects the amount) and carol (who approves from chat, where the message showed the original call).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from schemas import ActionDecidedData, ApprovalGranted, ApprovalRequested, Envelope, Reason
from servicekit import REPO_ROOT, EventOutlet, Keyring, SigningKey, ToolCatalog, action_digest, approval_document, approval_message
from services.approval import auth, domain, webhooks
from services.approval.api import create_api
from services.approval.domain import ApprovalRecord, Approver, GroupsConfig, Refusal, TenantGroups, Transition, Vote
from services.approval.quality import review_of
from services.approval.ratelimit import ApiRateLimits
from services.approval.repository import Endpoint, InMemoryApprovalRepository
from services.approval.reviews import review_report, reviews_from_events
from services.approval.service import ApprovalService
from services.approval.settings import ApprovalSettings
from services.approval.webhooks import SendResult
from tidegate.commands import approvals

NOW = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)
ARGS = {"payee_id": "cus_1002", "amount_usd": 899.0, "order_id": "O-5002"}
HALF = {**ARGS, "amount_usd": 450.0}
TWO = GroupsConfig(default=TenantGroups(risk_groups={"financial": ["finance"]}, required_approvals={"financial": 2}))
BOB = Approver(approver="bob@acme.example", tenant_id="acme", groups=frozenset({"finance"}))
CAROL = Approver(approver="carol@acme.example", tenant_id="acme", groups=frozenset({"finance"}))


def decided(action_id: str = "a-1") -> ActionDecidedData:
    return ActionDecidedData(
        action_id=action_id,
        task_id="t-1",
        tenant_id="acme",
        tool="issue_refund",
        args=ARGS,
        action_digest=action_digest("acme", "issue_refund", ARGS),
        outcome="escalate",
        reasons=[Reason(code="needs_human_approval", policy_id="refund-threshold", message="over 500")],
        policy_version="sha256:abc",
        risk="financial",
        latency_ms=0.2,
        requested_by="alice@acme.example",
    )


def request() -> ApprovalRecord:
    record = domain.request_from_decision(decided(), approval_id="ap-1", now=NOW, ttl=timedelta(hours=1), groups=TWO, risk="financial")
    assert record is not None
    assert record.required_approvals == 2
    return record


def vote(record: ApprovalRecord, who: Approver, **said: Any) -> Transition | Refusal:
    return domain.decide(record, who, Vote(decision="approve", seen_digest=record.action_digest, **said), now=NOW, groups=TWO)


def bob_halves(record: ApprovalRecord) -> ApprovalRecord:
    edited = vote(record, BOB, edited_args=HALF, review_reason="wrong_amount", comment="only half the stands were bent")
    assert isinstance(edited, Transition)
    assert edited.event_type == domain.EDITED  # told to the chat; nothing on the bus
    return edited.record


def test_an_approval_of_the_original_call_does_not_silently_discard_a_co_approvers_edit() -> None:
    edited = bob_halves(request())
    for via in ("callback", "link", "token"):
        carol = CAROL.model_copy(update={"via": via})
        refused = vote(edited, carol, comment="ok from chat (message said 899)")
        assert isinstance(refused, Refusal), via
        assert (refused.code, refused.status) == ("edit_pending", 409)
        assert "bob@acme.example approved this call with edited args" in refused.message
        assert '"amount_usd": 450.0' in refused.message
        assert "wrong_amount" in refused.message
        assert "the original call" in refused.message
    assert "open the request's page" in vote(edited, CAROL.model_copy(update={"via": "callback"})).message  # type: ignore[union-attr]
    assert '"replace_edit": true' in vote(edited, CAROL).message  # type: ignore[union-attr]
    other = vote(edited, CAROL, edited_args={**ARGS, "amount_usd": 400.0})
    assert isinstance(other, Refusal)
    assert other.code == "edit_pending"


def test_an_override_says_why_and_the_editor_reads_who_replaced_the_edit() -> None:
    edited = bob_halves(request())
    unsaid = vote(edited, CAROL, replace_edit=True)
    assert isinstance(unsaid, Refusal)
    assert (unsaid.code, unsaid.status) == ("comment_required", 422)
    replaced = vote(edited, CAROL, replace_edit=True, comment="the customer confirmed all stands bent")
    assert isinstance(replaced, Transition)
    assert replaced.event_type == domain.EDITED  # the call awaiting approval changed back: the chat is told
    record = replaced.record
    assert (record.status, record.approvers, record.edited_args) == ("pending", [CAROL.approver], None)
    bobs, carols = record.votes
    assert (bobs.approver, bobs.counted, bobs.replaced_by, bobs.edited_args) == (BOB.approver, False, CAROL.approver, HALF)
    assert (carols.approver, carols.counted, carols.comment) == (CAROL.approver, True, "the customer confirmed all stands bent")
    # A link or a callback cannot replace an edit, flag or not.
    by_chat = vote(edited, CAROL.model_copy(update={"via": "callback"}), replace_edit=True, comment="override")
    assert isinstance(by_chat, Refusal)
    assert by_chat.code == "edit_pending"


def test_a_concurrence_grants_the_edit_and_keeps_every_approvers_comment_and_reason(tmp_path: Path) -> None:
    edited = bob_halves(request())
    granted = vote(edited, CAROL.model_copy(update={"via": "callback"}), edited_args=HALF, comment="ok from chat")
    assert isinstance(granted, Transition)
    assert granted.event_type == domain.GRANTED
    record = granted.record
    assert (record.edited_args, record.approvers) == (HALF, [BOB.approver, CAROL.approver])
    assert record.review_reason == "wrong_amount"  # the edit's reason is its editor's, though carol gave none
    said = [(v.approver, v.comment, v.review_reason, v.via, v.counted) for v in record.votes]
    assert said == [
        (BOB.approver, "only half the stands were bent", "wrong_amount", "token", True),
        (CAROL.approver, "ok from chat", None, "callback", True),
    ]
    key = SigningKey.load_or_create(tmp_path, "approval")
    data = domain.signed_decision(record, domain.GRANTED, key)
    assert [v.comment for v in data.votes] == ["only half the stands were bent", "ok from chat"]
    assert data.key_id is not None
    assert data.signature is not None
    ring = Keyring.load(tmp_path, "approval")
    assert ring.verify(data.key_id, approval_document(domain.GRANTED, data), data.signature)
    reworded = data.model_copy(update={"votes": [data.votes[0].model_copy(update={"comment": "fine"}), data.votes[1]]})
    assert not ring.verify(data.key_id, approval_document(domain.GRANTED, reworded), data.signature)  # the words are signed too
    # A decision without votes (every event before them) signs the bytes it always did: no `votes` key.
    assert b'"votes"' not in approval_message(domain.GRANTED, data.model_copy(update={"votes": []}))


def test_the_report_counts_the_editors_reason_and_keeps_both_comments(tmp_path: Path) -> None:
    edited = bob_halves(request())
    granted = vote(edited, CAROL, edited_args=HALF, comment="ok")
    assert isinstance(granted, Transition)
    plain = vote(request(), BOB, comment="ok at 2am, known customer")
    assert isinstance(plain, Transition)
    both = vote(plain.record, CAROL, comment="carol ok from chat")
    assert isinstance(both, Transition)
    assert both.record.status == "granted"
    assert [v.comment for v in both.record.votes] == ["ok at 2am, known customer", "carol ok from chat"]

    report = review_report([review_of(granted.record)])
    assert report["reasons"]["reason"]["all"] == {"wrong_amount": 1}
    (example,) = report["examples"]["wrong_amount"]
    assert (example["outcome"], example["approver"], example["comment"]) == ("edited", BOB.approver, "only half the stands were bent")
    assert [v["comment"] for v in example["votes"]] == ["only half the stands were bent", "ok"]

    # `tidegate approvals report` reads the events: the same count from the granted event's votes.
    key = SigningKey.load_or_create(tmp_path, "approval")
    requested = ApprovalRequested.build(domain.unsigned_request(request()), source="tidegate/approval")
    decision = ApprovalGranted.build(domain.signed_decision(granted.record, domain.GRANTED, key), source="tidegate/approval")
    from_events = review_report(reviews_from_events([requested, decision]))
    assert from_events["reasons"]["reason"]["all"] == {"wrong_amount": 1}
    assert from_events["examples"]["wrong_amount"][0]["approver"] == BOB.approver


def test_the_never_rejects_signal_counts_every_approver_of_a_grant_not_only_the_last() -> None:
    """Approver6: with two approvals needed, Bob approved first every time and never looked twice, and the report's
    "never reject or edit" named Carol alone (the last approver). Each counted approval is a decision of its approver; the
    editor of a grant's edit edited it, the co-approver who concurred did not."""
    grants = []
    for n in range(5):
        first = vote(request(), BOB, comment=f"ok {n}")
        assert isinstance(first, Transition)
        both = vote(first.record, CAROL, comment="ok")
        assert isinstance(both, Transition)
        assert both.record.status == "granted"
        grants.append(review_of(both.record))
    stamps = review_report(grants, min_decisions=5)["rubber_stamp"]["never_reject"]
    assert stamps == [BOB.approver, CAROL.approver]

    concurred = vote(bob_halves(request()), CAROL, edited_args=HALF, comment="ok")
    assert isinstance(concurred, Transition)
    assert concurred.record.status == "granted"
    stamps = review_report([*grants, review_of(concurred.record)], min_decisions=5)["rubber_stamp"]["never_reject"]
    assert stamps == [CAROL.approver]  # Bob edited one; Carol concurred with his edit, which is no edit of hers


def test_a_rejection_names_its_rejecter_apart_from_those_who_approved() -> None:
    voted = vote(request(), BOB, comment="fine by me")
    assert isinstance(voted, Transition)
    rejected = domain.decide(
        voted.record, CAROL, Vote(decision="reject", comment="wrong customer", review_reason="wrong_recipient"), now=NOW, groups=TWO
    )
    assert isinstance(rejected, Transition)
    assert domain.approvals_of(rejected.record) == [BOB.approver]
    assert [(v.approver, v.decision) for v in rejected.record.votes] == [(BOB.approver, "approve"), (CAROL.approver, "reject")]


# --- over the API, the callback and the webhooks (in memory) -------------------------------------------------------------


@dataclass
class Sender:
    got: list[dict[str, Any]] = field(default_factory=list)
    secret: str = ""

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> SendResult:
        webhooks.verify(self.secret, headers, body, now=datetime.now(UTC).timestamp(), tolerance_s=300)  # Standard Webhooks, signed
        self.got.append(json.loads(body))
        return SendResult(True, 200, None, 1.0)


@dataclass
class World:
    service: ApprovalService
    client: httpx.AsyncClient
    sender: Sender
    tokens: dict[str, str]
    secret: str

    async def callback(self, msg_id: str, **data: Any) -> httpx.Response:
        body = json.dumps({"type": "approval.decision", "data": data}).encode()
        headers = webhooks.signed_headers(self.secret, msg_id, int(datetime.now(UTC).timestamp()), body)
        return await self.client.post("/api/v1/callbacks/acme/chat", content=body, headers=headers)

    async def messages(self) -> list[dict[str, Any]]:
        await self.service.deliver_webhooks()
        return self.sender.got


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    repo = InMemoryApprovalRepository()
    secret = webhooks.new_secret()
    sender = Sender(secret=secret)
    published: list[Envelope] = []

    async def publish(topic: str, event: Envelope) -> None:
        published.append(event)

    service = ApprovalService(
        repo=repo,
        publisher=EventOutlet(publish),
        key=SigningKey.load_or_create(tmp_path, "approval"),
        groups=TWO,
        settings=ApprovalSettings(),
        catalog=ToolCatalog.load(REPO_ROOT / "catalog" / "tools"),
        sender=sender,
        base_url=lambda: "http://approvals.test",
    )
    tokens = {}
    for who in ("bob@acme.example", "carol@acme.example"):
        token = auth.new_token()
        await repo.add_token(auth.hash_token(token), who, "acme", ["finance"])
        tokens[who.split("@")[0]] = token
    await repo.upsert_endpoint(Endpoint("chat", "http://chat.test/hook", secret, "acme", ("carol@acme.example",)))
    api = create_api(service, ApiRateLimits(per_token="1000/minute", per_ip="1000/minute"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://approvals.test") as client:
        yield World(service, client, sender, tokens, secret)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_carols_chat_approval_of_the_original_is_refused_and_the_chat_was_told_of_bobs_edit(world: World) -> None:
    record = await world.service.on_decided(decided(), event_id="e1", at=datetime.now(UTC))
    assert record is not None
    url = f"/api/v1/approvals/{record.approval_id}/approve"
    edit = {"action_digest": record.action_digest, "edited_args": HALF, "review_reason": "wrong_amount", "comment": "only half"}
    bobs = await world.client.post(url, json=edit, headers=bearer(world.tokens["bob"]))
    assert bobs.status_code == 200, bobs.text
    assert (bobs.json()["status"], bobs.json()["approvers"]) == ("pending", ["bob@acme.example"])

    told = [m for m in await world.messages() if m["type"] == "approval.edited"]
    assert len(told) == 1, [m["type"] for m in world.sender.got]
    pending = told[0]["data"]["pending_edit"]
    assert (pending["by"], pending["edited_args"], pending["review_reason"], pending["comment"]) == (
        "bob@acme.example",
        HALF,
        "wrong_amount",
        "only half",
    )
    assert "carol@acme.example" in told[0]["data"]["links"]  # the message asks for the next approval

    said = {"approval_id": record.approval_id, "approver": "carol@acme.example", "action_digest": record.action_digest}
    refused = await world.callback("msg_1", decision="approve", comment="ok from chat (message said 899)", **said)
    assert (refused.status_code, refused.json()["detail"]["code"]) == (409, "edit_pending"), refused.text
    assert "bob@acme.example" in refused.json()["detail"]["message"]
    bob_sees = (await world.client.get(f"/api/v1/approvals/{record.approval_id}", headers=bearer(world.tokens["bob"]))).json()
    assert (bob_sees["approvers"], bob_sees["edited_args"]) == (["bob@acme.example"], HALF)  # his edit and vote stand

    concurred = await world.callback("msg_2", decision="approve", edited_args=HALF, comment="ok, 450", **said)
    assert concurred.status_code == 200, concurred.text
    assert concurred.json()["status"] == "granted"
    assert concurred.json()["approvers"] == ["bob@acme.example", "carol@acme.example"]
    granted = await world.service.repo.get(record.approval_id)
    assert granted is not None
    assert granted.edited_args == HALF
    assert [v.comment for v in granted.votes] == ["only half", "ok, 450"]


async def test_an_override_over_the_api_takes_the_flag_and_a_comment_and_the_editor_sees_who_replaced_it(world: World) -> None:
    record = await world.service.on_decided(decided(), event_id="e1", at=datetime.now(UTC))
    assert record is not None
    url = f"/api/v1/approvals/{record.approval_id}/approve"
    edit = {"action_digest": record.action_digest, "edited_args": HALF, "review_reason": "wrong_amount"}
    assert (await world.client.post(url, json=edit, headers=bearer(world.tokens["bob"]))).status_code == 200
    plain = await world.client.post(url, json={"action_digest": record.action_digest}, headers=bearer(world.tokens["carol"]))
    assert (plain.status_code, plain.json()["detail"]["code"]) == (409, "edit_pending")
    override = {"action_digest": record.action_digest, "replace_edit": True, "comment": "all stands bent: full refund"}
    replaced = await world.client.post(url, json=override, headers=bearer(world.tokens["carol"]))
    assert replaced.status_code == 200, replaced.text
    bob_sees = (await world.client.get(f"/api/v1/approvals/{record.approval_id}", headers=bearer(world.tokens["bob"]))).json()
    assert (bob_sees["approvers"], bob_sees["edited_args"], bob_sees["can_decide"]) == (["carol@acme.example"], None, True)
    bobs = bob_sees["votes"][0]
    assert (bobs["approver"], bobs["counted"], bobs["replaced_by"]) == ("bob@acme.example", False, "carol@acme.example")
    assert bob_sees["votes"][1]["comment"] == "all stands bent: full refund"
    types = [m["type"] for m in await world.messages()]
    assert types == ["approval.requested", "approval.edited", "approval.edited"]
    back = world.sender.got[-1]["data"]
    assert back["pending_edit"] is None
    assert back["votes"][0]["replaced_by"] == "carol@acme.example"


async def test_a_chat_callback_gives_a_reason_from_the_tenants_taxonomy_and_names_its_rejecter(world: World) -> None:
    record = await world.service.on_decided(decided(), event_id="e1", at=datetime.now(UTC))
    assert record is not None
    url = f"/api/v1/approvals/{record.approval_id}/approve"
    assert (
        await world.client.post(url, json={"action_digest": record.action_digest}, headers=bearer(world.tokens["bob"]))
    ).status_code == 200
    said = {"approval_id": record.approval_id, "approver": "carol@acme.example", "action_digest": record.action_digest}
    unknown = await world.callback("msg_1", decision="reject", review_reason="because_i_said_so", **said)
    assert (unknown.status_code, unknown.json()["detail"]["code"]) == (422, "unknown_review_reason")
    rejected = await world.callback("msg_2", decision="reject", review_reason="missing_context", comment="whose order?", **said)
    assert rejected.status_code == 200, rejected.text
    assert rejected.json() == {
        "approval_id": record.approval_id,
        "status": "rejected",
        "approvers": ["bob@acme.example"],
        "rejected_by": "carol@acme.example",
    }
    stored = await world.service.repo.get(record.approval_id)
    assert stored is not None
    assert stored.review_reason == "missing_context"
    message = next(m for m in await world.messages() if m["type"] == "approval.rejected")["data"]
    assert (message["approvers"], message["rejected_by"], message["review_reason"]) == (
        ["bob@acme.example"],
        "carol@acme.example",
        "missing_context",
    )
    # The API names the approvals the same way: its approvers approved (an approver read "Edited args carol approved" of the rejecter)
    seen = (await world.client.get(f"/api/v1/approvals/{record.approval_id}", headers=bearer(world.tokens["bob"]))).json()
    assert (seen["approvers"], seen["rejected_by"]) == (["bob@acme.example"], "carol@acme.example")
    listed = (await world.client.get("/api/v1/approvals?status=rejected", headers=bearer(world.tokens["bob"]))).json()
    assert [(item["approvers"], item["rejected_by"]) for item in listed] == [(["bob@acme.example"], "carol@acme.example")]


def test_the_cli_sends_replace_edit_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """`tidegate approvals approve --replace-edit -m …` is the CLI's way to say it discards another approver's pending edit."""
    sent: list[dict[str, Any]] = []

    def api(method: str, url: str, **kw: Any) -> httpx.Response:
        sent.append(kw.get("json") or {})
        return httpx.Response(200, json={"status": "pending", "approvers": ["carol@acme.example"], "required_approvals": 2})

    monkeypatch.setattr(httpx, "request", api)
    base = ["approve", "ap-1", "--token", "tga_x", "--url", "http://approvals.test", "--digest", "d" * 64, "-m", "full refund"]
    assert CliRunner().invoke(approvals.app, [*base, "--replace-edit"]).exit_code == 0
    assert CliRunner().invoke(approvals.app, base).exit_code == 0
    assert sent == [
        {"action_digest": "d" * 64, "comment": "full refund", "edited_args": None, "replace_edit": True},
        {"action_digest": "d" * 64, "comment": "full refund", "edited_args": None},
    ]
