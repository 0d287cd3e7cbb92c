"""The service and its HTTP API over the in-memory repository (no sockets: httpx's ASGI transport)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from signers import as_operator

from schemas import (
    ActionDecidedData,
    ActionResultData,
    ControlKillswitch,
    ControlKillswitchData,
    Envelope,
    ErrorInfo,
    Reason,
    ResultCost,
    decode,
)
from servicekit import (
    REPO_ROOT,
    Authority,
    ControlState,
    EventOutlet,
    Keyring,
    Recorded,
    Reject,
    SigningKey,
    ToolCatalog,
    action_digest,
    approval_document,
    encode_signed,
    span,
)
from services.approval import auth, webhooks
from services.approval.api import create_api
from services.approval.domain import ApprovalRecord, GroupsConfig
from services.approval.ratelimit import ApiRateLimits
from services.approval.repository import Endpoint, InMemoryApprovalRepository
from services.approval.service import ApprovalService
from services.approval.settings import ApprovalSettings
from services.approval.webhooks import SendResult

ARGS = {"payee_id": "cus_1", "amount_usd": 900.0, "order_id": "O-1"}


@dataclass
class Published:
    events: list[tuple[str, Envelope]] = field(default_factory=list)

    async def publish(self, topic: str, event: Envelope) -> None:
        self.events.append((topic, event))

    def types(self) -> list[str]:
        return [e.type for _, e in self.events]


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now


@dataclass
class FlakySender:
    """Fails the first `failures` sends, then accepts; remembers what it got."""

    failures: int = 0
    got: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> SendResult:
        self.got.append((url, headers, body))
        if len(self.got) <= self.failures:
            return SendResult(False, 503, "HTTP 503", 1.0)
        return SendResult(True, 200, None, 1.0)


@dataclass
class World:
    service: ApprovalService
    repo: InMemoryApprovalRepository
    bus: Published
    clock: Clock
    client: httpx.AsyncClient
    sender: FlakySender
    tokens: dict[str, str]
    executor: SigningKey  # the executor's key, which the service trusts (`receive`)

    async def receive(self, event: Envelope, at: datetime | None = None) -> ApprovalRecord | None:
        """The service handles a result event as the bus hands it over: signed by the executor, with the bytes it came in."""
        data = event.data
        raw = encode_signed(event, self.executor)
        return await self.service.on_result(data, event_type=event.type, event_id=event.id, at=at or self.clock(), signed=raw)


def decided(action_id: str = "a-1", *, args: dict[str, Any] | None = None, **over: Any) -> ActionDecidedData:
    args = ARGS if args is None else args
    tool = over.pop("tool", "issue_refund")
    fields: dict[str, Any] = {
        "action_id": action_id,
        "task_id": "t-1",
        "tenant_id": "acme",
        "tool": tool,
        "args": args,
        "action_digest": action_digest("acme", tool, args),
        "outcome": "escalate",
        "reasons": [Reason(code="needs_human_approval", policy_id="refund-threshold", message="over 500")],
        "policy_version": "sha256:abc",
        "risk": "financial",
        "latency_ms": 0.2,
        "requested_by": "alice@acme.example",
    }
    return ActionDecidedData(**(fields | over))


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    repo = InMemoryApprovalRepository()
    bus = Published()
    clock = Clock()
    sender = FlakySender(failures=1)
    service = ApprovalService(
        repo=repo,
        publisher=EventOutlet(bus.publish),
        key=SigningKey.load_or_create(tmp_path, "approval"),
        groups=GroupsConfig(),
        settings=ApprovalSettings(webhook_backoff_initial_s=1.0),
        catalog=ToolCatalog.load(REPO_ROOT / "catalog" / "tools"),
        sender=sender,
        clock=clock,
        base_url=lambda: "http://approvals.test",
        authority=Authority(tmp_path, tmp_path / "operators", tmp_path / "clients"),
    )
    tokens = {}
    for who, groups in (("alice@acme.example", ["finance"]), ("bob@acme.example", ["finance"]), ("dan@acme.example", ["security"])):
        token = auth.new_token()
        await repo.add_token(auth.hash_token(token), who, "acme", groups)
        tokens[who.split("@")[0]] = token
    api = create_api(service, ApiRateLimits(per_token="1000/minute", per_ip="1000/minute"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://approvals.test") as client:
        yield World(service, repo, bus, clock, client, sender, tokens, SigningKey.load_or_create(tmp_path, "executor"))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_redelivery_opens_one_request_and_a_regrant_decision_none(world: World) -> None:
    first = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    again = await world.service.on_decided(decided(), event_id="e2", at=world.clock())
    assert first is not None
    assert again is not None
    assert again.approval_id == first.approval_id
    assert await world.service.on_decided(decided("a-2", via="approval", approval_id="ap-x"), event_id="e3", at=world.clock()) is None
    assert await world.service.on_decided(decided("a-3", outcome="allow"), event_id="e4", at=world.clock()) is None
    assert len(world.repo.records) == 1
    assert world.bus.types() == ["tidegate.approval.requested"]


@dataclass
class LosingOutlet:
    """Loses the first records it is given (the broker went away) and keeps the bytes of what it publishes after."""

    lost: list[bytes] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)

    async def publish(self, topic: str, event: Envelope) -> None:
        raise AssertionError("an announcement goes out as the outbox stored it")

    async def publish_many(self, records: Sequence[Recorded]) -> None:
        if not self.lost:
            self.lost.extend(r.value for r in records)
            raise ConnectionError("the broker went away")
        self.sent.extend(r.value for r in records)


async def test_a_request_the_broker_never_got_is_republished_by_the_sweep_byte_for_byte(world: World) -> None:
    outlet = LosingOutlet()
    world.service.publisher = outlet
    with span("approval handle action.decided"), pytest.raises(ConnectionError):
        await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    world.clock.now += timedelta(minutes=1)
    with span("approval sweep"):  # another trace context: the stored event keeps the one it was made in
        assert (await world.service.sweep())["republished"] == 1
    assert outlet.sent == outlet.lost
    event = decode("approvals", outlet.sent[0])
    assert event.type == "tidegate.approval.requested"
    assert event.signature is not None
    assert event.traceparent is not None
    assert (await world.service.sweep())["republished"] == 0


async def test_an_escalation_of_another_tenant_with_a_used_action_id_is_refused_not_handed_the_request(world: World) -> None:
    first = await world.service.on_decided(decided("a-1"), event_id="e1", at=world.clock())
    globex = decided("a-1", tenant_id="globex", action_digest=action_digest("globex", "issue_refund", ARGS))
    with pytest.raises(Reject) as refused:
        await world.service.on_decided(globex, event_id="e2", at=world.clock())
    assert refused.value.code == "action_id_reused"
    assert first is not None
    assert await world.repo.get_by_action("a-1", tenant_id="globex") is None
    assert await world.repo.get_by_action("a-1", tenant_id="acme") == first
    assert world.bus.types() == ["tidegate.approval.requested"]


async def test_forged_token_self_approval_and_wrong_group_are_refused(world: World) -> None:
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    url = f"/api/v1/approvals/{record.approval_id}/approve"
    body = {"action_digest": record.action_digest}
    assert (await world.client.post(url, json=body)).status_code == 401
    forged = await world.client.post(url, json=body, headers=bearer(auth.new_token()))
    assert forged.status_code == 401
    self_approval = await world.client.post(url, json=body, headers=bearer(world.tokens["alice"]))
    assert self_approval.status_code == 403
    assert self_approval.json()["detail"]["code"] == "four_eyes"
    wrong_group = await world.client.post(url, json=body, headers=bearer(world.tokens["dan"]))
    assert wrong_group.json()["detail"]["code"] == "not_in_group"
    assert world.bus.types() == ["tidegate.approval.requested"]
    ok = await world.client.post(url, json=body | {"comment": "fine"}, headers=bearer(world.tokens["bob"]))
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "granted"
    assert world.bus.types() == ["tidegate.approval.requested", "tidegate.approval.granted"]


async def test_edited_args_must_fit_the_tools_schema(world: World) -> None:
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    url = f"/api/v1/approvals/{record.approval_id}/approve"
    bad = await world.client.post(
        url, json={"action_digest": record.action_digest, "edited_args": {"amount_usd": -1}}, headers=bearer(world.tokens["bob"])
    )
    assert bad.status_code == 422
    assert bad.json()["detail"]["code"] == "invalid_args"


async def test_list_filters_and_show_carries_context_and_cost(world: World) -> None:
    await world.service.on_decided(decided("a-0", outcome="allow", estimated_cost_usd=0.01), event_id="e0", at=world.clock())
    result = ActionResultData(
        action_id="a-0",
        task_id="t-1",
        tenant_id="acme",
        tool="lookup_order",
        status="succeeded",
        attempts=1,
        duration_ms=5,
        cost=ResultCost(usd=0.003),
    )
    await world.service.on_result(result, event_type="tidegate.action.succeeded", event_id="e00", at=world.clock())
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    listed = (await world.client.get("/api/v1/approvals", params={"tool": "issue_refund"}, headers=bearer(world.tokens["bob"]))).json()
    assert [r["approval_id"] for r in listed] == [record.approval_id]
    assert listed[0]["can_decide"] is True
    assert (
        await world.client.get("/api/v1/approvals", params={"reason": "bulk_email_blocked"}, headers=bearer(world.tokens["bob"]))
    ).json() == []
    assert (
        await world.client.get("/api/v1/approvals", params={"tenant": "globex"}, headers=bearer(world.tokens["bob"]))
    ).status_code == 403
    mine = (await world.client.get("/api/v1/approvals", headers=bearer(world.tokens["alice"]))).json()
    assert mine[0]["can_decide"] is False
    assert "four eyes" in mine[0]["cannot_decide_because"]
    shown = (await world.client.get(f"/api/v1/approvals/{record.approval_id}", headers=bearer(world.tokens["bob"]))).json()
    assert [e["action_id"] for e in shown["context"]] == ["a-0", "a-0", "a-1"]
    assert shown["cost"]["spent_usd"] == pytest.approx(0.003)


async def test_a_request_whose_reason_code_this_release_does_not_know_is_opened_listed_and_shown(world: World) -> None:
    """Upgrade probe F4: a request a later release's policy escalated (a code added since) made the queue answer 500 to
    every approver after a rollback, and the escalation was dead-lettered by this service in a rolling upgrade."""
    later = decided(reasons=[Reason(code="a_later_release_code", policy_id="later-rule", message="a human decides")])
    record = await world.service.on_decided(later, event_id="e1", at=world.clock())
    assert record is not None
    listed = await world.client.get("/api/v1/approvals", headers=bearer(world.tokens["bob"]))
    assert listed.status_code == 200, listed.text
    assert [r["reasons"][0]["code"] for r in listed.json()] == ["a_later_release_code"]
    shown = await world.client.get(f"/api/v1/approvals/{record.approval_id}", headers=bearer(world.tokens["bob"]))
    assert shown.status_code == 200, shown.text
    assert shown.json()["can_decide"] is True


async def test_unknown_outcome_opens_a_follow_up_whose_resolution_is_signed_and_published(world: World, tmp_path: Path) -> None:
    await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    result = ActionResultData(
        action_id="a-1",
        task_id="t-1",
        tenant_id="acme",
        tool="issue_refund",
        status="unknown",
        error=ErrorInfo(type="timeout", message="payments did not answer"),
        attempts=1,
        duration_ms=10_000,
    )
    follow_up = await world.service.on_result(result, event_type="tidegate.action.unknown", event_id="e2", at=world.clock())
    assert follow_up is not None
    assert follow_up.kind == "follow_up"
    assert follow_up.risk == "financial"
    assert follow_up.args == ARGS
    listed = (await world.client.get("/api/v1/approvals", params={"reason": "outcome_unknown"}, headers=bearer(world.tokens["bob"]))).json()
    assert [r["approval_id"] for r in listed] == [follow_up.approval_id]
    before = len(world.bus.events)
    done = await world.client.post(
        f"/api/v1/approvals/{follow_up.approval_id}/reject",
        json={"comment": "no refund in the ledger"},
        headers=bearer(world.tokens["bob"]),
    )
    assert done.json()["status"] == "resolved"
    assert done.json()["resolution"] == "confirmed_not_done"
    [(topic, event)] = world.bus.events[before:]  # only the resolution: opening a follow-up is not an approval request
    assert (topic, event.type) == ("approvals", "tidegate.approval.resolved")
    assert (event.data.resolution, event.data.approver, event.data.comment) == (
        "confirmed_not_done",
        "bob@acme.example",
        "no refund in the ledger",
    )
    data = event.data
    assert Keyring.load(tmp_path, "approval").verify(data.key_id, approval_document(event.type, data), data.signature)
    flipped = data.model_copy(update={"resolution": "confirmed_done"})
    assert not Keyring.load(tmp_path, "approval").verify(data.key_id, approval_document(event.type, flipped), data.signature)
    again = await world.client.post(
        f"/api/v1/approvals/{follow_up.approval_id}/approve",
        json={"action_digest": follow_up.action_digest},
        headers=bearer(world.tokens["bob"]),
    )
    assert again.status_code == 409  # resolved once


async def test_a_follow_up_outlives_a_request_and_says_so_in_the_log_when_it_expires_unresolved(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Whether 900 USD left the account stays a question after an hour: a follow-up waits days, and never ends silently."""
    await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    result = ActionResultData(
        action_id="a-1", task_id="t-1", tenant_id="acme", tool="issue_refund", status="unknown",
        error=ErrorInfo(type="timeout", message="payments did not answer"), attempts=3, duration_ms=30_000,
    )  # fmt: skip
    follow_up = await world.service.on_result(result, event_type="tidegate.action.unknown", event_id="e2", at=world.clock())
    assert follow_up is not None
    settings = world.service.settings
    assert follow_up.expires_at - follow_up.created_at == timedelta(seconds=settings.follow_up_expiry_s) > timedelta(days=1)
    world.clock.now += timedelta(seconds=settings.expiry_s + 60)  # a request to run would have expired by now
    assert (await world.service.sweep())["expired"] == 1  # the request the follow-up came after
    assert (await world.repo.get(follow_up.approval_id)).status == "pending"
    world.clock.now = follow_up.expires_at + timedelta(seconds=1)
    with caplog.at_level(logging.WARNING, logger="services.approval.service"):
        assert (await world.service.sweep())["expired"] == 1
    assert (await world.repo.get(follow_up.approval_id)).status == "expired"
    assert f"follow-up {follow_up.approval_id} of a-1 (tenant acme, issue_refund) expired unresolved" in caplog.text
    assert "budget it held stays held" in caplog.text


async def test_one_time_link_from_the_webhook_works_once(world: World) -> None:
    secret = webhooks.new_secret()
    await world.repo.upsert_endpoint(Endpoint("chat", "http://chat.test/hook", secret, "acme", ("bob@acme.example",)))
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    assert await world.service.deliver_webhooks() == 0  # the first attempt fails (503)
    (delivery,) = await world.repo.deliveries()
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    world.clock.now += timedelta(seconds=1)
    assert await world.service.deliver_webhooks() == 1
    _url, headers, body = world.sender.got[-1]
    assert headers["webhook-id"] == world.sender.got[0][1]["webhook-id"]  # the same message id across retries
    webhooks.verify(secret, headers, body, now=world.clock().timestamp(), tolerance_s=300)
    link = json.loads(body)["data"]["links"]["bob@acme.example"].split("#link=")[1]
    me = (await world.client.get("/api/v1/me", headers=bearer(link))).json()
    assert (me["approver"], me["via"], me["groups"]) == ("bob@acme.example", "link", ["finance"])
    other = await world.service.on_decided(decided("a-2"), event_id="e2", at=world.clock())
    assert other is not None
    assert (await world.client.get(f"/api/v1/approvals/{other.approval_id}", headers=bearer(link))).status_code == 404
    first = await world.client.post(
        f"/api/v1/approvals/{record.approval_id}/approve", json={"action_digest": record.action_digest}, headers=bearer(link)
    )
    assert first.status_code == 200
    replay = await world.client.post(f"/api/v1/approvals/{record.approval_id}/reject", json={}, headers=bearer(link))
    assert replay.status_code == 401
    assert replay.json()["detail"]["code"] == "link_used"


async def test_a_link_dies_with_its_approvers_tokens(world: World) -> None:
    secret = webhooks.new_secret()
    await world.repo.upsert_endpoint(Endpoint("chat", "http://chat.test/hook", secret, "acme", ("bob@acme.example",)))
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    world.sender.failures = 0
    assert await world.service.deliver_webhooks() == 1
    link = json.loads(world.sender.got[-1][2])["data"]["links"]["bob@acme.example"].split("#link=")[1]
    assert (await world.client.get("/api/v1/me", headers=bearer(link))).status_code == 200
    for token_id, (_, info) in list(world.repo.token_rows.items()):
        if info.approver == "bob@acme.example":
            assert await world.repo.revoke_token(token_id)
    gone = await world.client.get(f"/api/v1/approvals/{record.approval_id}", headers=bearer(link))
    assert (gone.status_code, gone.json()["detail"]["code"]) == (401, "unauthenticated")


async def test_callbacks_are_verified_and_replays_refused(world: World) -> None:
    secret = webhooks.new_secret()
    await world.repo.upsert_endpoint(Endpoint("chat", "http://chat.test/hook", secret, "acme", ("bob@acme.example",)))
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    data = {"approval_id": record.approval_id, "approver": "bob@acme.example", "decision": "approve", "action_digest": record.action_digest}
    body = json.dumps({"type": "approval.decision", "data": data}).encode()
    now = int(world.clock().timestamp())

    async def post(msg_id: str, ts: int, payload: bytes = body, key: str = secret) -> httpx.Response:
        return await world.client.post(
            "/api/v1/callbacks/acme/chat", content=payload, headers=webhooks.signed_headers(key, msg_id, ts, payload)
        )

    stale = await post("msg_1", now - 301)
    assert (stale.status_code, stale.json()["detail"]["code"]) == (401, "stale_timestamp")
    forged = await post("msg_2", now, key=webhooks.new_secret())
    assert (forged.status_code, forged.json()["detail"]["code"]) == (401, "bad_signature")
    ok = await post("msg_3", now)
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "granted"
    replay = await post("msg_3", now)
    assert (replay.status_code, replay.json()["detail"]["code"]) == (409, "replayed")


async def test_endpoint_ids_are_each_tenants_own_and_a_callback_finds_the_endpoint_whose_secret_signed_it(world: World) -> None:
    acme_secret, evil_secret = webhooks.new_secret(), webhooks.new_secret()
    await world.repo.upsert_endpoint(Endpoint("chat", "http://chat.test/hook", acme_secret, "acme", ("bob@acme.example",)))
    await world.repo.upsert_endpoint(Endpoint("chat", "http://evil.test/hook", evil_secret, "evil", ("bob@acme.example",)))
    assert [e.url for e in await world.repo.endpoints_named("chat")] == ["http://chat.test/hook", "http://evil.test/hook"]
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    world.sender.failures = 0
    assert await world.service.deliver_webhooks() == 1
    (url, _headers, body) = world.sender.got[-1]
    assert url == "http://chat.test/hook"  # acme's request goes to acme's endpoint only
    callback_url = json.loads(body)["data"]["callback_url"]
    assert callback_url.endswith("/api/v1/callbacks/acme/chat")
    data = {"approval_id": record.approval_id, "approver": "bob@acme.example", "decision": "approve", "action_digest": record.action_digest}
    payload = json.dumps({"type": "approval.decision", "data": data}).encode()

    async def post(path: str, key: str, msg_id: str) -> httpx.Response:
        headers = webhooks.signed_headers(key, msg_id, int(world.clock().timestamp()), payload)
        return await world.client.post(f"/api/v1/callbacks/{path}", content=payload, headers=headers)

    on_acme = await post("acme/chat", evil_secret, "msg_1")
    assert (on_acme.status_code, on_acme.json()["detail"]["code"]) == (401, "bad_signature")
    by_evil = await post("chat", evil_secret, "msg_2")  # the older URL: evil's secret picks evil's endpoint
    assert (by_evil.status_code, by_evil.json()["detail"]["code"]) == (404, "not_found")
    for probe in ("nobody/chat", "acme/nothing", "nothing"):  # a missing endpoint answers as a wrong secret: ids are not told
        unknown = await post(probe, acme_secret, "msg_3")
        assert (unknown.status_code, unknown.json()) == (on_acme.status_code, on_acme.json())
    granted = await post("chat", acme_secret, "msg_2")  # acme's secret picks acme's endpoint, whose message ids are its own
    assert (granted.status_code, granted.json()["status"]) == (200, "granted")


async def test_sweep_escalates_then_expires_and_the_page_sees_a_kill_switch(world: World) -> None:
    world.service.settings = ApprovalSettings(escalate_after_s=60, expiry_s=3600)
    world.service.control = ControlState()
    lead = auth.new_token()
    await world.repo.add_token(auth.hash_token(lead), "lee@acme.example", "acme", ["finance-leads"])
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    url = f"/api/v1/approvals/{record.approval_id}"
    assert (await world.client.get(url, headers=bearer(lead))).json()["can_decide"] is False
    world.clock.now += timedelta(seconds=61)
    assert (await world.service.sweep())["escalated"] == 1
    shown = (await world.client.get(url, headers=bearer(lead))).json()
    assert (shown["escalated"], shown["can_decide"], shown["killswitch"]) == (True, True, None)
    switch = ControlKillswitchData(
        tenant_id="acme", tool="issue_refund", active=True, reason="payments incident", set_by="oncall@acme.example"
    )
    await world.service.control.apply(as_operator(ControlKillswitch.build(switch, source="tidegate/cli")))
    assert (await world.client.get(url, headers=bearer(lead))).json()["killswitch"]["reason"] == "payments incident"
    world.clock.now += timedelta(hours=1)
    assert (await world.service.sweep())["expired"] == 1
    assert world.bus.types() == ["tidegate.approval.requested", "tidegate.approval.expired"]
    assert world.bus.events[-1][1].data.signature
    late = await world.client.post(f"{url}/approve", json={"action_digest": record.action_digest}, headers=bearer(lead))
    assert (late.status_code, late.json()["detail"]["code"]) == (409, "not_pending")


async def test_openapi_documents_the_approver_api_with_bearer_auth(world: World) -> None:
    doc = create_api(world.service, ApiRateLimits(per_token="1/second", per_ip="1/second")).openapi()
    approve = doc["paths"]["/api/v1/approvals/{approval_id}/approve"]["post"]
    assert approve["security"] == [{"HTTPBearer": []}]
    assert {"401", "403", "409", "422"} <= set(approve["responses"])
    body = doc["components"]["schemas"]["ApproveRequest"]
    assert body["required"] == ["action_digest"]
    assert "edited_args" in body["properties"]
    assert {"tenant", "tool", "reason", "status"} <= {p["name"] for p in doc["paths"]["/api/v1/approvals"]["get"]["parameters"]}


async def test_the_page_is_served_with_a_strict_content_security_policy(world: World) -> None:
    page = await world.client.get("/")
    assert page.status_code == 200
    assert 'id="approve"' in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "'sha256-" in csp
    assert "http" not in csp  # nothing loads from another origin
    assert "cdn" not in page.text.lower()


async def test_a_decision_taken_over_http_continues_the_escalations_trace(world: World) -> None:
    escalation_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    with span("approval handle action.decided", parent=f"00-{escalation_trace}-00f067aa0ba902b7-01"):
        record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    assert record.traceparent is not None
    assert record.traceparent.split("-")[1] == escalation_trace
    answer = await world.client.post(
        f"/api/v1/approvals/{record.approval_id}/approve", json={"action_digest": record.action_digest}, headers=bearer(world.tokens["bob"])
    )
    assert answer.status_code == 200
    granted = world.bus.events[-1][1]
    assert granted.type == "tidegate.approval.granted"
    assert granted.traceparent is not None
    assert granted.traceparent.split("-")[1] == escalation_trace


async def test_the_body_is_read_only_once_the_caller_may_decide(world: World) -> None:
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    stranger = auth.new_token()
    await world.repo.add_token(auth.hash_token(stranger), "eve@globex.example", "globex", ["finance"])
    url = f"/api/v1/approvals/{record.approval_id}/approve"
    invalid = {"edited_args": [1], "unexpected": True}
    assert (await world.client.post(url, json=invalid, headers=bearer(stranger))).json()["detail"]["code"] == "not_found"
    assert (await world.client.post(url, content=b"{not json", headers=bearer(stranger))).status_code == 404
    assert (await world.client.post(url, json=invalid, headers=bearer(world.tokens["dan"]))).json()["detail"]["code"] == "not_in_group"
    assert (await world.client.post(url, json=invalid, headers=bearer(world.tokens["alice"]))).json()["detail"]["code"] == "four_eyes"
    mine = await world.client.post(url, json=invalid, headers=bearer(world.tokens["bob"]))
    assert (mine.status_code, mine.json()["detail"]["code"]) == (422, "invalid_body")
    assert world.bus.types() == ["tidegate.approval.requested"]


async def test_an_approver_rotates_their_own_token_over_the_api(world: World) -> None:
    old = world.tokens["bob"]
    rotated = await world.client.post("/api/v1/tokens/rotate", headers=bearer(old))
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["token"]
    assert (await world.client.get("/api/v1/me", headers=bearer(old))).status_code == 401
    assert (await world.client.get("/api/v1/me", headers=bearer(new))).json()["approver"] == "bob@acme.example"
    expires = datetime.fromisoformat(rotated.json()["expires_at"])
    assert expires - world.clock() == timedelta(days=30)
    world.repo.clock = world.clock
    world.clock.now = expires - timedelta(seconds=1)
    assert (await world.client.get("/api/v1/me", headers=bearer(new))).status_code == 200
    world.clock.now = expires
    assert (await world.client.get("/api/v1/me", headers=bearer(new))).status_code == 401  # expired, not revoked


async def test_a_credential_past_its_rate_gets_429_with_retry_after(world: World) -> None:
    api = create_api(world.service, ApiRateLimits(per_token="3/minute", per_ip="1000/minute"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://approvals.test") as client:
        answers = [await client.get("/api/v1/me", headers=bearer(world.tokens["bob"])) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert int(answers[-1].headers["retry-after"]) >= 1
        assert (await client.get("/api/v1/me", headers=bearer(world.tokens["dan"]))).status_code == 200
        assert (await client.get("/healthz")).status_code == 200  # the page and liveness are not limited


async def test_a_one_time_link_reads_its_own_request_only_before_and_after_it_is_spent(world: World) -> None:
    """A link travels in chat messages, which get forwarded: it must not read the tenant's report, queue or other requests."""
    await world.repo.upsert_endpoint(Endpoint("chat", "http://chat.test/hook", webhooks.new_secret(), "acme", ("bob@acme.example",)))
    other = await world.service.on_decided(decided("a-9", task_id="t-secret"), event_id="e9", at=world.clock())
    assert other is not None
    comment = {"comment": "customer cus_1 is under fraud investigation"}
    assert (
        await world.client.post(f"/api/v1/approvals/{other.approval_id}/reject", json=comment, headers=bearer(world.tokens["bob"]))
    ).is_success
    record = await world.service.on_decided(decided("a-1"), event_id="e1", at=world.clock())
    assert record is not None
    world.sender.failures = 0
    await world.service.deliver_webhooks()
    body = next(json.loads(b) for _, _, b in reversed(world.sender.got) if json.loads(b)["data"].get("approval_id") == record.approval_id)
    link = body["data"]["links"]["bob@acme.example"].split("#link=")[1]

    async def what_the_link_reads() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for path in ("/api/v1/report", "/api/v1/queue"):
            answer = await world.client.get(path, headers=bearer(link))
            assert "fraud" not in answer.text
            seen[path] = (answer.status_code, answer.json()["detail"]["code"])
        listed = (await world.client.get("/api/v1/approvals?status=all", headers=bearer(link))).json()
        seen["listed"] = [r["approval_id"] for r in listed]
        seen["other"] = (await world.client.get(f"/api/v1/approvals/{other.approval_id}", headers=bearer(link))).status_code
        seen["own"] = (await world.client.get(f"/api/v1/approvals/{record.approval_id}", headers=bearer(link))).status_code
        return seen

    expected = {
        "/api/v1/report": (403, "not_a_token"),
        "/api/v1/queue": (403, "not_a_token"),
        "listed": [record.approval_id],
        "other": 404,
        "own": 200,
    }
    assert await what_the_link_reads() == expected
    wrong = await world.client.post(f"/api/v1/approvals/{other.approval_id}/approve", json={}, headers=bearer(link))
    assert (wrong.status_code, wrong.json()["detail"]["code"]) == (403, "wrong_link")
    spent = await world.client.post(
        f"/api/v1/approvals/{record.approval_id}/approve", json={"action_digest": record.action_digest}, headers=bearer(link)
    )
    assert spent.status_code == 200
    assert await what_the_link_reads() == expected
    # the same routes with the approver's own token still answer
    assert (await world.client.get("/api/v1/report", headers=bearer(world.tokens["bob"]))).status_code == 200
    assert (await world.client.get("/api/v1/queue", headers=bearer(world.tokens["bob"]))).status_code == 200


async def test_rotating_a_token_never_makes_it_live_longer_than_it_was_made_to(world: World) -> None:
    """A stolen day-long token must not become a ten-year one over HTTP."""
    short = auth.new_token()
    await world.repo.add_token(
        auth.hash_token(short), "erin@acme.example", "acme", ["finance"], expires_at=datetime.now(UTC) + timedelta(days=1)
    )
    widened = await world.client.post("/api/v1/tokens/rotate", params={"expires_in_days": 3650}, headers=bearer(short))
    assert (widened.status_code, widened.json()["detail"]["code"]) == (422, "lifetime_too_long")
    assert (await world.client.get("/api/v1/me", headers=bearer(short))).status_code == 200  # refused before anything was revoked
    rotated = await world.client.post("/api/v1/tokens/rotate", headers=bearer(short))  # the default (30 days) is cut to the token's day
    assert rotated.status_code == 200, rotated.text
    lifetime = datetime.fromisoformat(rotated.json()["expires_at"]) - world.clock()
    assert timedelta(hours=23) < lifetime <= timedelta(days=1, seconds=5)
    again = await world.client.post("/api/v1/tokens/rotate", params={"expires_in_days": 0.5}, headers=bearer(rotated.json()["token"]))
    assert again.status_code == 200  # shorter is always allowed


async def test_an_admin_cannot_make_an_endpoint_decide_in_other_approvers_names(world: World) -> None:
    """An endpoint's secret posts decisions as its approvers: a tenant admin alone must not be able to list colleagues on it
    and vote as them (two 'finance' callbacks of her own making would grant a refund that needs two finance approvers)."""
    world.service.settings = world.service.settings.model_copy(update={"webhook_allowed_hosts": ["chat.test", "evil.test"]})
    mallory = auth.new_token()
    await world.repo.add_token(auth.hash_token(mallory), "mallory@acme.example", "acme", ["admin"])
    endpoints = "/api/v1/webhooks/endpoints"
    made = await world.client.post(
        endpoints,
        json={"endpoint_id": "bot", "url": "http://evil.test/hook", "approvers": ["alice@acme.example", "bob@acme.example"]},
        headers=bearer(mallory),
    )
    assert (made.status_code, made.json()["detail"]["code"]) == (403, "approver_not_enrolled")
    made = await world.client.post(
        endpoints,
        json={"endpoint_id": "bot", "url": "http://chat.test/hook", "approvers": ["mallory@acme.example"]},
        headers=bearer(mallory),
    )
    assert made.status_code == 200, made.text
    secret = made.json()["secret"]
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None

    async def callback_as(approver: str, msg_id: str) -> httpx.Response:
        data = {"approval_id": record.approval_id, "approver": approver, "decision": "approve", "action_digest": record.action_digest}
        payload = json.dumps({"type": "approval.decision", "data": data}).encode()
        headers = webhooks.signed_headers(secret, msg_id, int(world.clock().timestamp()), payload)
        return await world.client.post("/api/v1/callbacks/acme/bot", content=payload, headers=headers)

    forged = await callback_as("bob@acme.example", "msg_1")
    assert (forged.status_code, forged.json()["detail"]["code"]) == (403, "not_endpoint_approver")
    # bob enrols the endpoint his chat tool knows, with his own token: from now on it speaks for him (that is what enrolling means)
    fingerprint = webhooks.secret_fingerprint(secret)
    moved = await world.client.post(
        f"{endpoints}/bot/enrol",
        json={"url": "http://elsewhere.test/", "secret_fingerprint": fingerprint},
        headers=bearer(world.tokens["bob"]),
    )
    assert (moved.status_code, moved.json()["detail"]["code"]) == (409, "endpoint_changed")
    enrolled = await world.client.post(
        f"{endpoints}/bot/enrol",
        json={"url": "http://chat.test/hook", "secret_fingerprint": fingerprint},
        headers=bearer(world.tokens["bob"]),
    )
    assert enrolled.json()["approvers"] == ["mallory@acme.example", "bob@acme.example"]
    # the admin moves it to her own server (to get bob's links): bob's enrolment goes with the old URL
    again = {"endpoint_id": "bot", "url": "http://evil.test/hook", "secret": secret}
    refused = await world.client.post(
        endpoints, json=again | {"approvers": ["mallory@acme.example", "bob@acme.example"]}, headers=bearer(mallory)
    )
    assert (refused.status_code, refused.json()["detail"]["code"]) == (403, "approver_not_enrolled")
    moved = await world.client.post(endpoints, json=again | {"approvers": ["mallory@acme.example"]}, headers=bearer(mallory))
    assert moved.json()["approvers"] == ["mallory@acme.example"]
    dropped = await callback_as("bob@acme.example", "msg_2")
    assert (dropped.status_code, dropped.json()["detail"]["code"]) == (403, "not_endpoint_approver")
    link_holder = await world.client.post(
        f"{endpoints}/bot/enrol",
        json={"url": "http://evil.test/hook", "secret_fingerprint": fingerprint},
        headers=bearer(world.tokens["dan"]),
    )
    assert link_holder.status_code == 200  # dan enrols himself: his choice, and only his name
    left = await world.client.delete(f"{endpoints}/bot/enrol", headers=bearer(world.tokens["dan"]))
    assert left.json()["approvers"] == ["mallory@acme.example"]
    assert (await world.repo.get(record.approval_id)).status == "pending"  # type: ignore[union-attr]


async def test_a_webhook_message_posted_back_as_a_callback_decides_nothing(world: World) -> None:
    """Outgoing messages and callbacks share the endpoint's secret: a captured message, replayed to the callback URL with its own
    valid signature, must not read as a decision (its data is the request, not a vote)."""
    await world.repo.upsert_endpoint(Endpoint("chat", "http://chat.test/hook", webhooks.new_secret(), "acme", ("bob@acme.example",)))
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    world.sender.failures = 0
    assert await world.service.deliver_webhooks() == 1
    _url, headers, body = world.sender.got[-1]
    reflected = await world.client.post("/api/v1/callbacks/acme/chat", content=body, headers=headers)
    assert (reflected.status_code, reflected.json()["detail"]["code"]) == (422, "invalid_callback")
    assert (await world.repo.get(record.approval_id)).status == "pending"  # type: ignore[union-attr]
    assert world.bus.types() == ["tidegate.approval.requested"]


async def test_the_approver_sees_what_the_call_itself_costs_beside_it(world: World) -> None:
    record = await world.service.on_decided(decided(estimated_cost_usd=0.25), event_id="e1", at=world.clock())
    assert record is not None
    shown = (await world.client.get(f"/api/v1/approvals/{record.approval_id}", headers=bearer(world.tokens["bob"]))).json()
    assert shown["estimated_cost_usd"] == 0.25


async def test_a_request_for_a_tool_the_catalog_no_longer_grants_its_tenant_cannot_be_approved_only_rejected(world: World) -> None:
    # Raised before the catalog named the tool's tenants (an upgrade past tool tenancy): a grant would be denied
    # tool_not_granted by the policy and nothing would run, so the approver is told so instead of "you may decide".
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    catalog = world.service.catalog
    assert catalog is not None
    world.service.catalog = ToolCatalog(
        {**catalog.tools, "issue_refund": catalog["issue_refund"].model_copy(update={"tenants": ["globex"]})}
    )
    url = f"/api/v1/approvals/{record.approval_id}"
    shown = (await world.client.get(url, headers=bearer(world.tokens["bob"]))).json()
    assert (shown["can_decide"], shown["cannot_decide_code"], shown["can_reject"]) == (False, "tool_not_granted", True)
    assert "does not grant issue_refund to tenant acme" in shown["cannot_decide_because"]
    refused = await world.client.post(f"{url}/approve", json={"action_digest": record.action_digest}, headers=bearer(world.tokens["bob"]))
    assert (refused.status_code, refused.json()["detail"]["code"]) == (409, "tool_not_granted")
    rejected = await world.client.post(f"{url}/reject", json={"action_digest": record.action_digest}, headers=bearer(world.tokens["bob"]))
    assert rejected.status_code == 200, rejected.text
    assert world.bus.types()[-1] == "tidegate.approval.rejected"
