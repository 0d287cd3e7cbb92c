"""An approver or admin of one tenant attacks another's approvals, as issue #10 §3 found it could.

Everything goes over plain HTTP (httpx) to the real approval service on the real database and bus;
the attacker holds tenant A's tokens (an `admin` among them) and targets tenant B's refund.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from approval_harness import ApprovalHarness, StartApproval, bearer

from services.approval import webhooks

GROUPS = """
default:
  risk_groups: {financial: [finance], write_low: [support], unknown: [security]}
  required_approvals: {financial: 2}
"""
WaitFor = Callable[..., Awaitable[Any]]


def same_answer(a: httpx.Response, b: httpx.Response, id_a: str, id_b: str) -> bool:
    """Whether two answers are the same once each names its own id (what a missing id and another tenant's get)."""
    return (a.status_code, a.headers.get("content-type"), a.text.replace(id_a, "ID")) == (
        b.status_code,
        b.headers.get("content-type"),
        b.text.replace(id_b, "ID"),
    )


async def start(start_approval: StartApproval, tmp_path: Path, **overrides: Any) -> ApprovalHarness:
    groups = tmp_path / "groups.yaml"
    groups.write_text(GROUPS)
    return await start_approval(groups_file=groups, **overrides)


async def decisions_on_the_bus(h: ApprovalHarness, approval_id: str) -> list[str]:
    return [e.type for e in await h.approvals() if e.data.approval_id == approval_id and e.type != "tidegate.approval.requested"]


async def test_tenant_as_admin_cannot_create_replace_list_probe_or_read_tenant_bs_endpoints_requests_or_deliveries(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: WaitFor, tmp_path: Path
) -> None:
    h = await start(start_approval, tmp_path)
    tenant_a = f"evil-{uuid.uuid4().hex[:8]}"
    b_admin = await h.token("root@b.example", ["admin"])
    bob = await h.token("bob@b.example", ["finance"])
    a_admin = await h.token("mallory@a.example", ["admin", "finance"], tenant=tenant_a)
    operator = await h.token("ops@tidegate.example", ["admin"], operator=True)
    endpoints = f"{h.url}/api/v1/webhooks/endpoints"
    b_endpoint = f"b-chat-{uuid.uuid4().hex[:6]}"
    created = await http.post(endpoints, json={"endpoint_id": b_endpoint, "url": "http://127.0.0.1:9/b"}, headers=bearer(b_admin))
    assert created.status_code == 200, created.text
    b_chat = {"url": "http://127.0.0.1:9/b", "secret_fingerprint": webhooks.secret_fingerprint(created.json()["secret"])}
    enrolled = await http.post(f"{endpoints}/{b_endpoint}/enrol", json=b_chat, headers=bearer(bob))
    assert enrolled.status_code == 200, enrolled.text
    original = await h.repo.endpoint(h.tenant, b_endpoint)
    assert original is not None

    # create for B or for every tenant: refused; B's id (an existence probe, or a takeover): A's own endpoint, B's untouched
    mine = {"url": "http://127.0.0.1:9/a", "approvers": ["mallory@a.example"], "secret": webhooks.new_secret()}
    for_b = await http.post(endpoints, json=mine | {"endpoint_id": "a-into-b", "tenant_id": h.tenant}, headers=bearer(a_admin))
    assert (for_b.status_code, for_b.json()["detail"]["code"]) == (403, "wrong_tenant")
    everyone = await http.post(endpoints, json=mine | {"endpoint_id": "a-everyone", "tenant_id": "*"}, headers=bearer(a_admin))
    assert (everyone.status_code, everyone.json()["detail"]["code"]) == (403, "wrong_tenant")
    same_id = await http.post(endpoints, json=mine | {"endpoint_id": b_endpoint}, headers=bearer(a_admin))
    new_id = await http.post(endpoints, json=mine | {"endpoint_id": f"a-new-{uuid.uuid4().hex[:6]}"}, headers=bearer(a_admin))
    assert same_id.status_code == new_id.status_code == 200, same_id.text
    assert same_id.json() | {"endpoint_id": "ID"} == new_id.json() | {"endpoint_id": "ID"}  # a taken id answers as a free one
    assert same_id.json()["tenant_id"] == tenant_a
    assert await h.repo.endpoint(h.tenant, b_endpoint) == original
    theirs_now = await h.repo.endpoint(tenant_a, b_endpoint)
    assert theirs_now is not None
    assert (theirs_now.url, theirs_now.approvers) == ("http://127.0.0.1:9/a", ("mallory@a.example",))
    assert await h.repo.endpoint(h.tenant, "a-into-b") is None
    assert await h.repo.endpoint("*", "a-everyone") is None
    # an endpoint of A cannot name B's approver
    stranger = await http.post(endpoints, json=mine | {"endpoint_id": "a-bob", "approvers": ["bob@b.example"]}, headers=bearer(a_admin))
    assert (stranger.status_code, stranger.json()["detail"]["code"]) == (422, "unknown_approvers")

    # list and read: B's endpoint is invisible (A's id reads as A's own), and asking for B's answers as a missing id does
    listed = await http.get(endpoints, headers=bearer(a_admin))
    assert {e["tenant_id"] for e in listed.json()} == {tenant_a}
    assert "http://127.0.0.1:9/b" not in {e["url"] for e in listed.json()}
    assert (h.tenant, b_endpoint) in {
        (e["tenant_id"], e["endpoint_id"]) for e in (await http.get(endpoints, headers=bearer(operator))).json()
    }
    own = await http.get(f"{endpoints}/{b_endpoint}", headers=bearer(a_admin))
    assert (own.status_code, own.json()["tenant_id"], own.json()["url"]) == (200, tenant_a, "http://127.0.0.1:9/a")
    theirs = await http.get(f"{endpoints}/{b_endpoint}", params={"tenant_id": h.tenant}, headers=bearer(a_admin))
    missing = await http.get(f"{endpoints}/no-such-endpoint", params={"tenant_id": h.tenant}, headers=bearer(a_admin))
    assert theirs.status_code == 404
    assert same_answer(theirs, missing, b_endpoint, "no-such-endpoint")
    b_reads = await http.get(f"{endpoints}/{b_endpoint}", headers=bearer(b_admin))
    assert (b_reads.status_code, b_reads.json()["url"]) == (200, "http://127.0.0.1:9/b")

    # B's request and its delivery log
    decided = h.decided()
    await h.escalate(decided)
    record = await h.request_for(decided.action_id, wait_for)
    await wait_for(lambda: h.repo.deliveries(record.approval_id), what="a delivery to B's endpoint")
    a_log = await http.get(f"{h.url}/api/v1/webhooks/deliveries", headers=bearer(a_admin))
    assert a_log.status_code == 200
    assert record.approval_id not in {d["approval_id"] for d in a_log.json()}
    filtered = await http.get(f"{h.url}/api/v1/webhooks/deliveries", params={"approval_id": record.approval_id}, headers=bearer(a_admin))
    assert filtered.json() == []
    b_log = await http.get(f"{h.url}/api/v1/webhooks/deliveries", params={"approval_id": record.approval_id}, headers=bearer(b_admin))
    assert [(d["tenant_id"], d["endpoint_id"]) for d in b_log.json()] == [(h.tenant, b_endpoint)]  # none to A's endpoint of that id

    approvals = f"{h.url}/api/v1/approvals"
    assert record.approval_id not in {r["approval_id"] for r in (await http.get(approvals, headers=bearer(a_admin))).json()}
    assert (await http.get(approvals, params={"tenant": h.tenant}, headers=bearer(a_admin))).status_code == 403
    missing_id = "ap-0000000000000000"
    for method, suffix, body in (
        ("GET", "", None),
        ("POST", "/approve", {"action_digest": record.action_digest}),
        ("POST", "/approve", {"edited_args": "not an object", "surprise": 1}),  # invalid, and still only a 404
        ("POST", "/reject", {"comment": 7}),
    ):
        theirs = await http.request(method, f"{approvals}/{record.approval_id}{suffix}", json=body, headers=bearer(a_admin))
        missing = await http.request(method, f"{approvals}/{missing_id}{suffix}", json=body, headers=bearer(a_admin))
        assert theirs.status_code == 404, (method, suffix, theirs.text)
        assert same_answer(theirs, missing, record.approval_id, missing_id)
    stored = await h.repo.get(record.approval_id)
    assert stored is not None
    assert (stored.status, stored.approvers) == ("pending", [])


async def test_a_callback_signed_with_a_secret_the_attacker_chose_or_naming_another_approver_approves_nothing(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: WaitFor, tmp_path: Path
) -> None:
    h = await start(start_approval, tmp_path)
    tenant_a = f"evil-{uuid.uuid4().hex[:8]}"
    b_admin = await h.token("root@b.example", ["admin"])
    bob = await h.token("bob@b.example", ["finance"])
    await h.token("carol@b.example", ["finance"])
    a_admin = await h.token("mallory@a.example", ["admin", "finance"], tenant=tenant_a)
    endpoints = f"{h.url}/api/v1/webhooks/endpoints"
    b_endpoint = f"b-chat-{uuid.uuid4().hex[:6]}"
    b_made = await http.post(endpoints, json={"endpoint_id": b_endpoint, "url": "http://127.0.0.1:9/b"}, headers=bearer(b_admin))
    b_secret = b_made.json()["secret"]
    b_chat = {"url": "http://127.0.0.1:9/b", "secret_fingerprint": webhooks.secret_fingerprint(b_secret)}
    enrolled = await http.post(f"{endpoints}/{b_endpoint}/enrol", json=b_chat, headers=bearer(bob))
    assert enrolled.status_code == 200, enrolled.text
    chosen = webhooks.new_secret()  # the attacker's own secret, on the attacker's own endpoint, under B's endpoint id
    a_made = await http.post(
        endpoints,
        json={"endpoint_id": b_endpoint, "url": "http://127.0.0.1:9/a", "approvers": ["mallory@a.example"], "secret": chosen},
        headers=bearer(a_admin),
    )
    assert a_made.status_code == 200, a_made.text
    decided = h.decided()
    await h.escalate(decided)
    record = await h.request_for(decided.action_id, wait_for)

    def decision(approver: str, approval_id: str = record.approval_id) -> bytes:
        data = {"approval_id": approval_id, "approver": approver, "decision": "approve", "action_digest": record.action_digest}
        return json.dumps({"type": "approval.decision", "data": data}).encode()

    async def post(path: str, body: bytes, secret: str, **header_over: Any) -> httpx.Response:
        headers: dict[str, Any] = webhooks.signed_headers(secret, f"msg_{uuid.uuid4().hex}", int(time.time()), body) | header_over
        return await http.post(f"{h.url}/api/v1/callbacks/{path}", content=body, headers=headers)

    b_path, a_path, old_path = f"{h.tenant}/{b_endpoint}", f"{tenant_a}/{b_endpoint}", b_endpoint
    # the attacker's endpoint and secret, B's request: answered as a missing request (the older URL picks A's endpoint too)
    for path in (a_path, old_path):
        theirs = await post(path, decision("mallory@a.example"), chosen)
        missing = await post(path, decision("mallory@a.example", "ap-0000000000000000"), chosen)
        assert theirs.status_code == 404, (path, theirs.text)
        assert same_answer(theirs, missing, record.approval_id, "ap-0000000000000000")
    # B's endpoint, signed with the attacker's secret
    forged = await post(b_path, decision("bob@b.example"), chosen)
    assert (forged.status_code, forged.json()["detail"]["code"]) == (401, "bad_signature")
    # and whether B has an endpoint of some id is not told: a missing one answers as a wrong secret does
    probe = await post(f"{h.tenant}/no-such-endpoint", decision("bob@b.example"), chosen)
    assert (probe.status_code, probe.json()) == (forged.status_code, forged.json())
    # B's endpoint and secret, but an approver who is not the endpoint's (a real finance approver of B)
    outsider = await post(b_path, decision("carol@b.example"), b_secret)
    assert (outsider.status_code, outsider.json()["detail"]["code"]) == (403, "not_endpoint_approver")
    # a signature header that is not ASCII is a refusal, not a server error
    garbled = await post(b_path, decision("bob@b.example"), b_secret, **{"webhook-signature": "v1,sïgnature=".encode()})
    assert (garbled.status_code, garbled.json()["detail"]["code"]) == (401, "bad_signature")

    stored = await h.repo.get(record.approval_id)
    assert stored is not None
    assert (stored.status, stored.approvers) == ("pending", [])
    assert (
        await h.proc.pool.fetchval(  # type: ignore[union-attr]
            "SELECT count(*) FROM approval.approvals WHERE tenant_id = $1 AND status <> 'pending'", h.tenant
        )
        == 0
    )
    await wait_for(h.all_published, what="outbox drained")
    assert await decisions_on_the_bus(h, record.approval_id) == []
    # and the genuine approver through B's own endpoint is still heard (the refusals above are not a broken callback),
    # at the callback URL B's messages carry, and at the older URL although A registered the same id
    (delivery,) = await h.repo.deliveries(record.approval_id)
    callback_url = json.loads(delivery.body)["data"]["callback_url"]
    assert callback_url.endswith(f"/api/v1/callbacks/{b_path}")
    genuine = await post(b_path, decision("bob@b.example"), b_secret)
    assert genuine.status_code == 200, genuine.text
    assert genuine.json()["approvers"] == ["bob@b.example"]
    again = await post(old_path, decision("bob@b.example"), b_secret)
    assert (again.status_code, again.json()["detail"]["code"]) == (409, "already_approved")  # B's endpoint, B's vote rules


async def test_expired_revoked_and_rotated_tokens_are_refused(
    start_approval: StartApproval, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    h = await start(start_approval, tmp_path)
    me = f"{h.url}/api/v1/me"
    live = await h.token("bob@b.example", ["finance"])
    expired = await h.token("bob@b.example", ["finance"], expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert (await http.get(me, headers=bearer(live))).status_code == 200
    answer = await http.get(me, headers=bearer(expired))
    assert (answer.status_code, answer.json()["detail"]["code"]) == (401, "unauthenticated")
    revoked = await h.token("carol@b.example", ["finance"])
    (info,) = [t for t in await h.repo.tokens() if t.approver == "carol@b.example" and t.tenant_id == h.tenant]
    assert await h.repo.revoke_token(info.token_id)
    assert (await http.get(me, headers=bearer(revoked))).status_code == 401

    rotated = await http.post(f"{h.url}/api/v1/tokens/rotate", params={"expires_in_days": 1}, headers=bearer(live))
    assert rotated.status_code == 200, rotated.text
    fresh = rotated.json()["token"]
    assert (await http.get(me, headers=bearer(live))).status_code == 401
    who = await http.get(me, headers=bearer(fresh))
    assert (who.status_code, who.json()["approver"], who.json()["tenant_id"], who.json()["groups"]) == (
        200,
        "bob@b.example",
        h.tenant,
        ["finance"],
    )
    expires = datetime.fromisoformat(rotated.json()["expires_at"])
    assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(days=1)


@pytest.mark.parametrize("scope", ["token", "ip"])
async def test_a_burst_gets_429_with_retry_after(
    scope: str, start_approval: StartApproval, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    rates = {"rate_limit_per_token": "5/minute", "rate_limit_per_ip": "1000/minute"}
    if scope == "ip":
        rates = {"rate_limit_per_token": "1000/minute", "rate_limit_per_ip": "8/minute"}
    h = await start(start_approval, tmp_path, **rates)
    token = await h.token("bob@b.example", ["finance"])
    headers = bearer(token) if scope == "token" else bearer("tga_guessing")
    allowed = 5 if scope == "token" else 8

    def spoofed(n: int) -> dict[str, str]:
        # The guesser names another address each time: the limit counts the TCP peer (red team F3: walked past it).
        return headers | {"X-Forwarded-For": f"203.0.113.{n}", "Forwarded": f"for=198.51.100.{n}"}

    answers = [await http.get(f"{h.url}/api/v1/me", headers=spoofed(n)) for n in range(allowed + 1)]
    assert [a.status_code for a in answers[:allowed]] == [200 if scope == "token" else 401] * allowed
    last = answers[-1]
    assert (last.status_code, last.json()["detail"]["code"]) == (429, "rate_limited")
    assert 1 <= int(last.headers["retry-after"]) <= 60
    if scope == "token":  # another caller from the same address is not throttled by this token's burst
        other = await h.token("carol@b.example", ["finance"])
        assert (await http.get(f"{h.url}/api/v1/me", headers=bearer(other))).status_code == 200


async def test_a_forged_decision_cannot_lower_the_quorum_and_an_unknown_requester_cannot_be_decided(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: WaitFor, tmp_path: Path
) -> None:
    h = await start(start_approval, tmp_path)
    alice = await h.token("alice@acme.example", ["finance", "support"])  # the requester
    bob = await h.token("bob@b.example", ["finance"])
    carol = await h.token("carol@b.example", ["finance"])
    sam = await h.token("sam@b.example", ["support"])  # may approve write_low, not financial

    # a forged copy, sent first: write_low and no requester
    forged = h.decided(risk="write_low", requested_by=None)
    await h.escalate(forged)
    record = await h.request_for(forged.action_id, wait_for)
    assert (record.risk, record.required_approvals, record.requested_by) == ("financial", 2, None)
    url = f"{h.url}/api/v1/approvals/{record.approval_id}"
    for token in (bob, sam, alice):
        answer = await http.post(f"{url}/approve", json={"action_digest": record.action_digest}, headers=bearer(token))
        assert (answer.status_code, answer.json()["detail"]["code"]) == (409, "requester_unknown"), answer.text
        reject = await http.post(f"{url}/reject", json={}, headers=bearer(token))
        assert (reject.status_code, reject.json()["detail"]["code"]) == (409, "requester_unknown")
    shown = (await http.get(url, headers=bearer(bob))).json()
    assert (shown["status"], shown["can_decide"]) == ("pending", False)
    assert "requester" in shown["cannot_decide_because"]

    # a forged copy with the requester: still financial, two approvers, and never the requester
    claimed = h.decided(risk="write_low")
    await h.escalate(claimed)
    record = await h.request_for(claimed.action_id, wait_for)
    assert (record.risk, record.required_approvals) == ("financial", 2)
    url = f"{h.url}/api/v1/approvals/{record.approval_id}"
    body = {"action_digest": record.action_digest}
    by_requester = await http.post(f"{url}/approve", json=body, headers=bearer(alice))
    assert (by_requester.status_code, by_requester.json()["detail"]["code"]) == (403, "four_eyes")
    by_support = await http.post(f"{url}/approve", json=body, headers=bearer(sam))
    assert (by_support.status_code, by_support.json()["detail"]["code"]) == (403, "not_in_group")
    first = await http.post(f"{url}/approve", json=body, headers=bearer(bob))
    assert (first.status_code, first.json()["status"]) == (200, "pending")
    await wait_for(h.all_published, what="outbox drained")
    assert await decisions_on_the_bus(h, record.approval_id) == []
    second = await http.post(f"{url}/approve", json=body, headers=bearer(carol))
    assert second.json()["status"] == "granted"
    assert await wait_for(lambda: decisions_on_the_bus(h, record.approval_id), what="the grant") == ["tidegate.approval.granted"]


async def test_each_check_answers_in_the_documented_order_before_the_next_reveals_anything(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: WaitFor, tmp_path: Path
) -> None:
    """docs/security/approval.md: credential (401), the caller's tenant (404), group and four eyes (403), body (422), state (409)."""
    h = await start(start_approval, tmp_path)
    stranger = await h.token("mallory@a.example", ["finance", "admin"], tenant=f"evil-{uuid.uuid4().hex[:8]}")
    requester = await h.token("alice@acme.example", ["finance"])  # the task's requester, in the right group
    support = await h.token("sam@b.example", ["support"])  # the right tenant, the wrong group
    bob, carol = await h.token("bob@b.example", ["finance"]), await h.token("carol@b.example", ["finance"])
    decided = h.decided()
    await h.escalate(decided)
    record = await h.request_for(decided.action_id, wait_for)
    url = f"{h.url}/api/v1/approvals/{record.approval_id}/approve"
    invalid = {"edited_args": "not an object", "surprise": 1}

    async def code(token: str | None, body: dict[str, Any]) -> tuple[int, str]:
        answer = await http.post(url, json=body, headers=bearer(token) if token else {})
        return answer.status_code, answer.json()["detail"]["code"]

    # Every caller sends the same invalid body: each is stopped by its own first failing check, never by the body.
    assert await code(None, invalid) == (401, "unauthenticated")
    assert await code("tga_guessed", invalid) == (401, "unauthenticated")
    assert await code(stranger, invalid) == (404, "not_found")
    assert await code(support, invalid) == (403, "not_in_group")
    assert await code(requester, invalid) == (403, "four_eyes")
    assert await code(bob, invalid) == (422, "invalid_body")
    assert await code(bob, {"action_digest": "sha256:other"}) == (409, "digest_mismatch")
    stored = await h.repo.get(record.approval_id)
    assert stored is not None
    assert (stored.status, stored.approvers) == ("pending", [])  # none of them counted
    for token in (bob, carol):  # the quorum of this groups file is 2
        answer = await http.post(url, json={"action_digest": record.action_digest}, headers=bearer(token))
        assert answer.status_code == 200, answer.text
    assert await code(bob, invalid) == (422, "invalid_body")  # the body still comes before the state
    assert await code(bob, {"action_digest": record.action_digest}) == (409, "not_pending")
