"""A tenant admin turns the tenant's chat endpoint against its approvers (security review 2, findings 2, 7 and 8).

Plain HTTP to the real approval service on the real database and bus; the chat tool and the admin's server are
webhook receivers on loopback. Mallory is in group `admin` only and requests a refund that needs two finance approvals.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from approval_harness import ApprovalHarness, Receiver, StartApproval, bearer

from services.approval import webhooks

GROUPS = "default:\n  risk_groups: {financial: [finance]}\n  required_approvals: {financial: 2}\n"
ALICE, BOB, MALLORY = "alice@acme.example", "bob@acme.example", "mallory@acme.example"
WaitFor = Callable[..., Awaitable[Any]]


async def _with_the_chat_endpoint(start_approval: StartApproval, tmp_path: Path, url: str, secret: str) -> tuple[ApprovalHarness, str]:
    """The service with the operator's chat endpoint of a fresh tenant, listing alice and bob; and Mallory's token."""
    tenant = f"acme-{uuid.uuid4().hex[:8]}"
    groups, endpoints = tmp_path / "groups.yaml", tmp_path / "webhooks.yaml"
    groups.write_text(GROUPS)
    endpoint = {"endpoint_id": "chat", "url": url, "secret": secret, "tenant_id": tenant, "approvers": [ALICE, BOB]}
    endpoints.write_text(json.dumps({"endpoints": [endpoint]}))  # YAML reads JSON
    h = await start_approval(groups_file=groups, webhooks_file=endpoints, webhook_backoff_initial_s=0.3, webhook_max_attempts=50)
    h.tenant = tenant
    for who in (ALICE, BOB):
        await h.token(who, ["finance"])
    return h, await h.token(MALLORY, ["admin"])


async def test_an_admin_who_repoints_the_chat_endpoint_gets_none_of_the_links_queued_for_its_approvers(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: WaitFor, tmp_path: Path
) -> None:
    """The chat tool is down (503); Mallory re-points `chat` at her server before the retry. The retry used to carry alice's
    and bob's one-time links there, and she granted her own refund as both."""
    secret = webhooks.new_secret()
    async with Receiver.listening(failures=10**6) as chat, Receiver.listening(failures=0) as mallorys:
        h, mallory = await _with_the_chat_endpoint(start_approval, tmp_path, chat.url, secret)
        decided = h.decided(requested_by=MALLORY)
        await h.escalate(decided)
        record = await h.request_for(decided.action_id, wait_for)
        await wait_for(lambda: chat.got, what="the first attempt to the chat tool")
        assert sorted(chat.messages()[0]["data"]["links"]) == [ALICE, BOB]  # to the endpoint they were listed on
        repointed = await http.post(
            f"{h.url}/api/v1/webhooks/endpoints",
            json={"endpoint_id": "chat", "url": mallorys.url, "approvers": []},
            headers=bearer(mallory),
        )
        assert repointed.status_code == 200, repointed.text
        await wait_for(lambda: mallorys.got, what="the retry, to Mallory's server")
        assert [m["data"]["approval_id"] for m in mallorys.messages()] == [record.approval_id]
        assert [m["data"].get("links") for m in mallorys.messages()] == [None]
        webhooks.verify(repointed.json()["secret"], *mallorys.got[0], now=time.time(), tolerance_s=300)
        (delivery,) = await h.repo.deliveries(record.approval_id)
        assert "#link=" not in delivery.body  # nor is any link stored, for a database dump to give away
        stored = await h.repo.get(record.approval_id)
        assert stored is not None
        assert (stored.status, stored.approvers) == ("pending", [])


async def test_an_admin_who_swaps_in_her_own_secret_at_the_same_url_gets_no_enrolment(
    start_approval: StartApproval, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Mallory keeps the URL and puts in a secret only she holds: bob, enrolling again with the fingerprint of the secret his chat
    tool holds, is refused; she could otherwise sign callbacks as him."""
    chat_secret = webhooks.new_secret()
    h, mallory = await _with_the_chat_endpoint(start_approval, tmp_path, "http://127.0.0.1:9/chat", chat_secret)
    bob = await h.token(BOB, ["finance"])
    endpoints = f"{h.url}/api/v1/webhooks/endpoints"
    swapped = await http.post(
        endpoints,
        json={"endpoint_id": "chat", "url": "http://127.0.0.1:9/chat", "secret": webhooks.new_secret(), "approvers": []},
        headers=bearer(mallory),
    )
    assert swapped.status_code == 200, swapped.text
    chat = {"url": "http://127.0.0.1:9/chat", "secret_fingerprint": webhooks.secret_fingerprint(chat_secret)}
    refused = await http.post(f"{endpoints}/chat/enrol", json=chat, headers=bearer(bob))
    assert (refused.status_code, refused.json()["detail"]["code"]) == (409, "endpoint_changed")
    assert swapped.json()["secret"] not in refused.text
    # the write itself is conditional on the secret: an endpoint changed after it was read is not enrolled
    assert await h.repo.set_endpoint_approver(h.tenant, "chat", BOB, url=chat["url"], secret=chat_secret, enrolled=True) is None
    endpoint = await h.repo.endpoint(h.tenant, "chat")
    assert endpoint is not None
    assert endpoint.approvers == ()
    # with the secret it has now (what her chat tool would show), the endpoint is enrolled
    now = {"url": chat["url"], "secret_fingerprint": swapped.json()["secret_fingerprint"]}
    enrolled = await http.post(f"{endpoints}/chat/enrol", json=now, headers=bearer(bob))
    assert (enrolled.status_code, enrolled.json()["approvers"]) == (200, [BOB])


async def test_a_nul_in_an_id_or_a_filter_is_refused_not_a_server_error(start_approval: StartApproval, http: httpx.AsyncClient) -> None:
    """PostgreSQL refuses U+0000 in any text: each of these was a 500."""
    h = await start_approval()
    token = await h.token("bob@acme.example", ["support", "admin"])
    answers = {}
    for method, path in [
        ("POST", "/api/v1/actions/a%00b/undo"),
        ("GET", "/api/v1/approvals/ap-a%00b"),
        ("POST", "/api/v1/approvals/ap-a%00b/reject"),
        ("GET", "/api/v1/approvals?tool=a%00b"),
        ("DELETE", "/api/v1/webhooks/endpoints/a%00b/enrol"),
        ("POST", "/api/v1/callbacks/a%00b/chat"),
        ("GET", "/api/v1/tenants/a%00b"),
    ]:
        answer = await http.request(method, f"{h.url}{path}", headers=bearer(token))
        answers[method, path] = (answer.status_code, answer.json()["detail"]["code"] if answer.status_code < 500 else answer.text)
    assert set(answers.values()) == {(422, "invalid_param")}, answers
