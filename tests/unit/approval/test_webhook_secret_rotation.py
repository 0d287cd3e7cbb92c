"""An endpoint's secret rotated with an overlap, and after a leak (the rotation probe's F1).

Before, the only way to change an endpoint's secret was to register it again: from that moment every message was signed
with the new secret alone, so the chat tool's receiver refused every message until someone changed its configuration,
and the callbacks it signed with the secret it had were refused. Standard Webhooks rotates a secret by signing with
both (`webhook-signature: v1,<new> v1,<former>`). These tests act as the receiver, verifying each message it gets with
the reference library (`standardwebhooks.Webhook.verify`) holding the former secret or the new one, before, during and
after the overlap; as the chat tool posting decisions back; and as the holder of a leaked secret.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks
from test_approval_service_api import World, bearer, decided, world  # noqa: F401  (the fixture)

from services.approval import auth, webhooks
from services.approval.app import load_endpoints
from services.approval.domain import ApprovalRecord
from services.approval.repository import Endpoint

OLD = webhooks.new_secret()
ALICE, BOB, CAROL, OPS = "alice@acme.example", "bob@acme.example", "carol@acme.example", "ops@platform.example"
ENDPOINTS = "/api/v1/webhooks/endpoints"


async def _chat(world: World) -> dict[str, str]:  # noqa: F811
    """The tenant's chat endpoint with the former secret, alice and bob enrolled; an operator's token and carol's (admin)."""
    world.service.settings = world.service.settings.model_copy(update={"webhook_allowed_hosts": ["chat.test"]})
    world.sender.failures = 0
    await world.repo.upsert_endpoint(Endpoint("chat", "http://chat.test/hook", OLD, "acme", (ALICE, BOB)))
    ops, carol = auth.new_token(), auth.new_token()
    await world.repo.add_token(auth.hash_token(ops), OPS, "*", ["admin"], operator=True)
    await world.repo.add_token(auth.hash_token(carol), CAROL, "acme", ["admin", "finance"])
    return {"ops": ops, "carol": carol}


async def _message(world: World, n: int) -> tuple[dict[str, str], bytes]:  # noqa: F811
    """A new request raised and its message sent: the headers and body the receiver gets."""
    record = await world.service.on_decided(decided(f"a-{n}", requested_by="erin@acme.example"), event_id=f"e{n}", at=world.clock())
    assert record is not None
    await world.service.deliver_webhooks()
    url, headers, body = world.sender.got[-1]
    assert url == "http://chat.test/hook"
    assert json.loads(body)["data"]["approval_id"] == record.approval_id
    return headers, body


def _receiver_accepts(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The chat tool's receiver, holding `secret`: what the reference library says of the message."""
    try:
        standardwebhooks.Webhook(secret).verify(body, headers)
    except standardwebhooks.WebhookVerificationError:
        return False
    return True


async def _callback(world: World, secret: str, approver: str, n: int) -> httpx.Response:  # noqa: F811
    """The chat tool posts `approver`'s approval of a new request back, signed with `secret`."""
    record = await world.service.on_decided(decided(f"c-{n}", requested_by="erin@acme.example"), event_id=f"ce{n}", at=world.clock())
    assert isinstance(record, ApprovalRecord)
    data: dict[str, Any] = {"approval_id": record.approval_id, "approver": approver, "decision": "approve"}
    payload = json.dumps({"type": "approval.decision", "data": data | {"action_digest": record.action_digest}}).encode()
    headers = webhooks.signed_headers(secret, f"msg_{n}", int(world.clock().timestamp()), payload)
    return await world.client.post("/api/v1/callbacks/acme/chat", content=payload, headers=headers)


async def test_a_receiver_verifies_every_message_before_during_and_after_the_overlap(world: World) -> None:  # noqa: F811
    tokens = await _chat(world)
    headers, body = await _message(world, 1)
    assert _receiver_accepts(OLD, headers, body)  # before

    rotated = await world.client.post(f"{ENDPOINTS}/chat/rotate?tenant_id=acme", json={"overlap_s": 120}, headers=bearer(tokens["ops"]))
    assert rotated.status_code == 200, rotated.text
    view = rotated.json()
    new = view["secret"]
    webhooks.check_secret(new)
    assert new != OLD
    assert view["secret_fingerprint"] == webhooks.secret_fingerprint(new)
    assert view["former_secret_fingerprint"] == webhooks.secret_fingerprint(OLD)
    assert view["approvers"] == [ALICE, BOB]  # an operator's rotation keeps who the endpoint speaks for
    shown = (await world.client.get(f"{ENDPOINTS}/chat?tenant_id=acme", headers=bearer(tokens["ops"]))).json()
    assert shown["secret"] is None
    assert shown["former_secret_until"] == view["former_secret_until"]

    world.clock.now += timedelta(seconds=60)  # during: a receiver on either secret verifies, none refuses a message
    headers, body = await _message(world, 2)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert _receiver_accepts(OLD, headers, body)
    assert _receiver_accepts(new, headers, body)
    assert sorted(json.loads(body)["data"]["links"]) == [ALICE, BOB]
    assert (await _callback(world, OLD, ALICE, 1)).status_code == 200  # the chat tool not switched yet
    assert (await _callback(world, new, BOB, 2)).status_code == 200  # switched

    world.clock.now += timedelta(seconds=61)  # after: the new one only
    headers, body = await _message(world, 3)
    assert not _receiver_accepts(OLD, headers, body)
    assert _receiver_accepts(new, headers, body)
    late = await _callback(world, OLD, ALICE, 3)
    assert (late.status_code, late.json()["detail"]["code"]) == (401, "bad_signature")
    assert (await _callback(world, new, ALICE, 4)).status_code == 200
    shown = (await world.client.get(f"{ENDPOINTS}/chat?tenant_id=acme", headers=bearer(tokens["ops"]))).json()
    assert shown["former_secret_fingerprint"] is None


async def test_a_second_rotation_during_the_overlap_is_refused_and_the_receiver_on_the_former_secret_keeps_verifying(
    world: World,  # noqa: F811
) -> None:
    """The receiver not switched yet, holding the former secret, while someone rotates again within the overlap.

    Before, the second rotation made the first one's new secret the former and dropped the original at once: every
    message the receiver on the original secret got from then on failed to verify, an hour into a day's overlap.
    """
    tokens = await _chat(world)
    first = await world.client.post(f"{ENDPOINTS}/chat/rotate?tenant_id=acme", json={"overlap_s": 3600}, headers=bearer(tokens["ops"]))
    assert first.status_code == 200, first.text
    world.clock.now += timedelta(seconds=60)
    again = await world.client.post(f"{ENDPOINTS}/chat/rotate?tenant_id=acme", json={"overlap_s": 3600}, headers=bearer(tokens["ops"]))
    assert (again.status_code, again.json()["detail"]["code"]) == (409, "rotation_under_way"), again.text
    headers, body = await _message(world, 1)
    assert _receiver_accepts(OLD, headers, body)  # not switched yet: still verifies
    assert _receiver_accepts(first.json()["secret"], headers, body)
    leaked = await world.client.post(f"{ENDPOINTS}/chat/rotate?tenant_id=acme", json={"leaked": True}, headers=bearer(tokens["ops"]))
    assert leaked.status_code == 200, leaked.text  # a leak is never kept waiting
    world.clock.now += timedelta(seconds=3600)
    after = await world.client.post(f"{ENDPOINTS}/chat/rotate?tenant_id=acme", json={"overlap_s": 60}, headers=bearer(tokens["ops"]))
    assert after.status_code == 200, after.text  # once an overlap is over, the next rotation goes through


async def test_the_holder_of_a_leaked_secret_is_refused_at_once(world: World) -> None:  # noqa: F811
    tokens = await _chat(world)
    rotated = await world.client.post(f"{ENDPOINTS}/chat/rotate?tenant_id=acme", json={"leaked": True}, headers=bearer(tokens["ops"]))
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert rotated.json()["former_secret_fingerprint"] is None
    forged = await _callback(world, OLD, ALICE, 1)  # the thief signs a decision with the leaked secret
    assert (forged.status_code, forged.json()["detail"]["code"]) == (401, "bad_signature")
    headers, body = await _message(world, 1)  # and can no longer check, nor pass off, a message as the service's
    assert headers["webhook-signature"].count("v1,") == 1
    assert not _receiver_accepts(OLD, headers, body)
    assert _receiver_accepts(new, headers, body)
    both = await world.client.post(
        f"{ENDPOINTS}/chat/rotate?tenant_id=acme", json={"leaked": True, "overlap_s": 60}, headers=bearer(tokens["ops"])
    )
    assert (both.status_code, both.json()["detail"]["code"]) == (422, "invalid_body")  # a leak gets no overlap, said


async def test_an_admins_rotation_gives_her_no_voice_for_the_approvers(world: World) -> None:  # noqa: F811
    """Carol (admin) rotates: the new secret, which she now holds, speaks for nobody she did not enrol; the former one keeps
    speaking for alice and bob during the overlap, and alice enrols with the new fingerprint from her chat tool."""
    tokens = await _chat(world)
    rotated = await world.client.post(f"{ENDPOINTS}/chat/rotate", json={"overlap_s": 120}, headers=bearer(tokens["carol"]))
    assert rotated.status_code == 200, rotated.text
    view, new = rotated.json(), rotated.json()["secret"]
    assert (view["approvers"], view["former_approvers"]) == ([], [ALICE, BOB])
    by_carol = await _callback(world, new, ALICE, 1)
    assert (by_carol.status_code, by_carol.json()["detail"]["code"]) == (403, "not_endpoint_approver")
    assert (await _callback(world, OLD, ALICE, 2)).status_code == 200  # the chat tool alice enrolled still works meanwhile
    enrolled = await world.client.post(
        f"{ENDPOINTS}/chat/enrol",
        json={"url": "http://chat.test/hook", "secret_fingerprint": webhooks.secret_fingerprint(new)},
        headers=bearer(world.tokens["alice"]),
    )
    assert enrolled.status_code == 200
    assert enrolled.json()["approvers"] == [ALICE]
    assert (await _callback(world, new, ALICE, 3)).status_code == 200
    left = await world.client.delete(f"{ENDPOINTS}/chat/enrol", headers=bearer(world.tokens["bob"]))
    assert left.json()["former_approvers"] == [ALICE]  # bob left: the former secret no longer speaks for him either
    gone = await _callback(world, OLD, BOB, 4)
    assert (gone.status_code, gone.json()["detail"]["code"]) == (403, "not_endpoint_approver")


@pytest.mark.parametrize("who", ["carol", "stranger"])
async def test_only_the_tenants_admin_or_an_operator_rotates(world: World, who: str) -> None:  # noqa: F811
    tokens = await _chat(world)
    if who == "stranger":
        stranger = auth.new_token()
        await world.repo.add_token(auth.hash_token(stranger), "sam@globex.example", "globex", ["admin"])
        answer = await world.client.post(f"{ENDPOINTS}/chat/rotate?tenant_id=acme", json={}, headers=bearer(stranger))
        assert (answer.status_code, answer.json()["detail"]["code"]) == (404, "not_found")  # as a missing one
    else:
        answer = await world.client.post(f"{ENDPOINTS}/chat/rotate", headers=bearer(world.tokens["alice"]))
        assert (answer.status_code, answer.json()["detail"]["code"]) == (403, "not_admin")
        assert (await world.client.post(f"{ENDPOINTS}/chat/rotate", headers=bearer(tokens["carol"]))).status_code == 200
    stored = await world.repo.endpoint("acme", "chat")
    assert stored is not None
    assert (stored.secret == OLD) == (who == "stranger")


def test_the_operators_file_rotates_an_endpoint_with_an_overlap(tmp_path: Path) -> None:
    """An endpoint of the webhooks file is rotated there: `secret` the new one, `former_secret` until `former_secret_until`."""
    new = webhooks.new_secret()
    path = tmp_path / "webhooks.yaml"
    entry = f"  - {{endpoint_id: chat, url: 'https://chat.example/hook', secret: '{new}', tenant_id: acme, approvers: [{ALICE}]"
    path.write_text(f"endpoints:\n{entry}, former_secret: '{OLD}', former_secret_until: 2027-01-05T12:00:00Z}}\n")
    (endpoint,) = load_endpoints(path)
    assert (endpoint.secret, endpoint.former_secret, endpoint.former_approvers) == (new, OLD, (ALICE,))
    assert endpoint.former_at(datetime(2027, 1, 5, 11, 59, tzinfo=UTC)) == OLD
    assert endpoint.former_at(datetime(2027, 1, 5, 12, 0, tzinfo=UTC)) is None
    path.write_text(f"endpoints:\n{entry}, former_secret: '{OLD}'}}\n")
    with pytest.raises(ValueError, match="go together"):
        load_endpoints(path)


async def test_after_the_overlap_the_row_holds_the_secret_alone_as_an_older_release_reads_it(world: World) -> None:  # noqa: F811
    """The upgrade probe (upgrade21 F3): rolled back to release 19 after an overlap, the approval service read the row's
    sealed form (both secrets, JSON) as the secret itself and signed every message with it: the chat tool, on the new
    secret, dropped them all, and nothing was logged. Once the overlap has passed, the sweep writes the secret alone."""
    from services.approval._endpoint_rows import sealed_text

    tokens = await _chat(world)
    rotated = await world.client.post(f"{ENDPOINTS}/chat/rotate?tenant_id=acme", json={"overlap_s": 120}, headers=bearer(tokens["ops"]))
    new = rotated.json()["secret"]
    await world.service.sweep()  # during: both secrets kept
    during = await world.repo.endpoint("acme", "chat")
    assert during is not None
    assert during.former_secret == OLD

    world.clock.now += timedelta(seconds=121)
    assert (await world.service.sweep())["overlaps_ended"] == 1
    after = await world.repo.endpoint("acme", "chat")
    assert after is not None
    assert (after.secret, after.former_secret, after.former_until, after.former_approvers) == (new, None, None, ())
    assert sealed_text(after) == new  # what a release before 20 opens as the endpoint's secret: the one the chat tool has
    assert after.approvers == (ALICE, BOB)
    assert (await world.service.sweep())["overlaps_ended"] == 0  # written once
    headers, body = await _message(world, 1)
    assert _receiver_accepts(new, headers, body)


async def test_an_overlap_the_sweep_cannot_end_does_not_hold_back_expiry(world: World, monkeypatch: Any) -> None:  # noqa: F811
    """Ending an overlap rewrites a row (sealed, signed, pinned on the bus): when that fails, a request past its expiry
    must still expire in the same round (it was the round's first step, so its failure expired nothing, round after round)."""
    tokens = await _chat(world)
    rotated = await world.client.post(f"{ENDPOINTS}/chat/rotate?tenant_id=acme", json={"overlap_s": 120}, headers=bearer(tokens["ops"]))
    assert rotated.status_code == 200
    record = await world.service.on_decided(decided("a-late", requested_by="erin@acme.example"), event_id="e-late", at=world.clock())
    assert record is not None

    async def unwritable(*args: Any) -> None:
        raise ConnectionError("the directory topic is not reachable")

    monkeypatch.setattr(world.repo, "change_endpoint", unwritable)
    world.clock.now = record.expires_at + timedelta(seconds=1)
    with pytest.raises(ConnectionError):
        await world.service.sweep()  # the failure is the round's, said by its guard as before
    expired = await world.repo.get(record.approval_id)
    assert expired is not None
    assert expired.status == "expired"


async def test_the_sweep_leaves_a_refused_or_disabled_endpoint_row_alone(world: World) -> None:  # noqa: F811
    """A row whose proof fails (written outside the service) is refused wherever it is read; the sweep does not hand it
    to a rewrite each round (in the database that logged its refusal every round), nor a disabled endpoint's."""
    from dataclasses import replace

    tokens = await _chat(world)
    rotated = await world.client.post(f"{ENDPOINTS}/chat/rotate?tenant_id=acme", json={"overlap_s": 120}, headers=bearer(tokens["ops"]))
    assert rotated.status_code == 200
    stored = await world.repo.endpoint("acme", "chat")
    assert stored is not None
    refused = replace(stored, unproven="its signature is not valid for a trusted key")
    world.repo.endpoint_rows["acme", "chat"] = refused
    off = replace(stored, endpoint_id="old-chat", enabled=False)
    world.repo.endpoint_rows["acme", "old-chat"] = off
    calls: list[tuple[str, str]] = []
    change = world.repo.change_endpoint

    async def counted(tenant_id: str, endpoint_id: str, edit: Any) -> Any:
        calls.append((tenant_id, endpoint_id))
        return await change(tenant_id, endpoint_id, edit)

    world.repo.change_endpoint = counted  # type: ignore[method-assign]
    world.clock.now += timedelta(seconds=121)
    assert (await world.service.sweep())["overlaps_ended"] == 0
    assert calls == []
    assert world.repo.endpoint_rows["acme", "chat"] is refused
