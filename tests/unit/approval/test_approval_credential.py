"""A decision's signed record says which credential proved its approver (auditor F3).

The auditor had `approver: bob@acme.example` signed by the approval service, and nothing tying it to a credential: which
token (issued by whom), a one-time link, or a chat callback. Each vote now names it by id (never the secret nor its hash),
signed with the vote; `audit explain` shows it; a vote recorded before keeps the bytes it was signed with.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from test_approval_service_api import World, bearer, decided, world  # noqa: F401  (the fixture)

import schemas as s
from servicekit import approval_document, approval_message
from services.approval import auth, webhooks
from services.approval._ballots import ballot_claims
from services.approval.domain import GroupsConfig, TenantGroups
from services.approval.repository import Endpoint

TWO = GroupsConfig(default=TenantGroups(risk_groups={"financial": ["finance"]}, required_approvals={"financial": 2}))


def _decision(w: World) -> s.ApprovalData:
    (event,) = [e for _, e in w.bus.events if e.type.startswith("tidegate.approval.") and e.type != "tidegate.approval.requested"]
    assert isinstance(event.data, s.ApprovalData)
    return event.data


def _token_id(w: World, approver: str) -> str:
    return next(tid for tid, (_, info) in w.repo.token_rows.items() if info.approver == approver)


def _verifies(w: World, event_type: str, data: s.ApprovalData) -> bool:
    try:
        w.service.key.private.public_key().verify(auth.unb64url(data.signature or ""), approval_document(event_type, data))
    except Exception:
        return False
    return True


async def test_a_grant_by_token_names_the_token_by_id_signed_and_never_the_secret(world: World) -> None:  # noqa: F811
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    ok = await world.client.post(
        f"/api/v1/approvals/{record.approval_id}/approve", json={"action_digest": record.action_digest}, headers=bearer(world.tokens["bob"])
    )
    assert ok.status_code == 200, ok.text
    data = _decision(world)
    (vote,) = data.votes
    info = world.repo.token_rows[_token_id(world, "bob@acme.example")][1]
    assert vote.credential is not None
    assert (vote.credential.kind, vote.credential.id, vote.credential.issued_at) == ("api_token", info.token_id, info.created_at)
    assert vote.credential.issued_by == info.key_id
    assert not vote.credential.operator
    wire = s.encode(next(e for _, e in world.bus.events if e.type == "tidegate.approval.granted")).decode()
    token = world.tokens["bob"]
    assert token not in wire  # an id only: nothing that signs in,
    assert auth.hash_token(token) not in wire  # nor the hash the database finds it by
    assert _verifies(world, "tidegate.approval.granted", data)
    # The attacker who rewrites the record to name another credential (alice's token) breaks the service's signature.
    forged_vote = vote.model_copy(update={"credential": vote.credential.model_copy(update={"id": _token_id(world, "alice@acme.example")})})
    assert not _verifies(world, "tidegate.approval.granted", data.model_copy(update={"votes": [forged_vote]}))
    stripped = vote.model_copy(update={"credential": None})
    assert not _verifies(world, "tidegate.approval.granted", data.model_copy(update={"votes": [stripped]}))


async def test_a_grant_through_a_one_time_link_names_the_link_and_the_key_that_issued_it(world: World) -> None:  # noqa: F811
    secret = webhooks.new_secret()
    await world.repo.upsert_endpoint(Endpoint("chat", "http://chat.test/hook", secret, "acme", ("bob@acme.example",)))
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    world.sender.failures = 0
    assert await world.service.deliver_webhooks() == 1
    link = json.loads(world.sender.got[-1][2])["data"]["links"]["bob@acme.example"].split("#link=")[1]
    ok = await world.client.post(
        f"/api/v1/approvals/{record.approval_id}/approve", json={"action_digest": record.action_digest}, headers=bearer(link)
    )
    assert ok.status_code == 200, ok.text
    (vote,) = _decision(world).votes
    claims = auth.verify_link(world.service.key, link)
    assert vote.credential == s.ApprovalCredential(kind="link", id=claims.link_id, issued_by=world.service.key.key_id)
    assert link.split(".")[2] not in s.canonical_json(vote.model_dump(mode="json")).decode()  # not the link's signature


async def test_a_rejection_through_a_chat_callback_names_the_endpoint_and_the_message(world: World) -> None:  # noqa: F811
    secret = webhooks.new_secret()
    await world.repo.upsert_endpoint(Endpoint("chat", "http://chat.test/hook", secret, "acme", ("bob@acme.example",)))
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    data = {"approval_id": record.approval_id, "approver": "bob@acme.example", "decision": "reject", "action_digest": record.action_digest}
    body = json.dumps({"type": "approval.decision", "data": data}).encode()
    headers = webhooks.signed_headers(secret, "msg_7", int(world.clock().timestamp()), body)
    ok = await world.client.post("/api/v1/callbacks/acme/chat", content=body, headers=headers)
    assert ok.status_code == 200, ok.text
    decision = _decision(world)
    (vote,) = decision.votes
    assert vote.credential == s.ApprovalCredential(kind="callback", id="chat", message_id="msg_7")
    assert secret not in s.encode(next(e for _, e in world.bus.events if e.type == "tidegate.approval.rejected")).decode()
    assert _verifies(world, "tidegate.approval.rejected", decision)


async def test_two_approvers_each_named_with_their_own_token(world: World) -> None:  # noqa: F811
    carol = auth.new_token()
    await world.repo.add_token(auth.hash_token(carol), "carol@acme.example", "acme", ["finance"])
    world.tokens["carol"] = carol
    world.service.groups = TWO
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    for who in ("bob", "carol"):
        world.clock.now += timedelta(seconds=1)
        body = {"action_digest": record.action_digest}
        r = await world.client.post(f"/api/v1/approvals/{record.approval_id}/approve", json=body, headers=bearer(world.tokens[who]))
        assert r.status_code == 200, r.text
    votes = _decision(world).votes
    assert [(v.approver, v.credential.id if v.credential else None) for v in votes] == [
        ("bob@acme.example", _token_id(world, "bob@acme.example")),
        ("carol@acme.example", _token_id(world, "carol@acme.example")),
    ]


def _old_message(event_type: str, data: s.ApprovalData) -> dict[str, Any]:
    return json.loads(approval_message(event_type, data))


def test_a_vote_recorded_before_credentials_keeps_the_bytes_it_was_signed_with() -> None:
    """A vote without a credential is signed as it always was (no `credential` key), so older records still verify."""
    vote = s.ApprovalVote(approver="bob@acme.example", decision="approve", at=s.utcnow())
    data = s.ApprovalData(
        approval_id="ap-1", action_id="a-1", task_id="t-1", tenant_id="acme", tool="issue_refund", args={}, action_digest="d",
        approver="bob@acme.example", approvers=["bob@acme.example"], expires_at=s.utcnow(), votes=[vote],
    )  # fmt: skip
    (signed,) = _old_message("tidegate.approval.granted", data)["votes"]
    assert "credential" not in signed
    assert signed == {k: v for k, v in vote.model_dump(mode="json").items() if k != "credential"}
    # An older record (no `credential` in its JSON) still reads.
    older = {"approver": "bob@acme.example", "decision": "approve", "at": "2026-12-06T23:00:00Z"}
    assert s.ApprovalVote.model_validate(older).credential is None


async def test_a_counted_approvals_proof_covers_its_credential(world: World) -> None:  # noqa: F811
    """The database login that swaps the credential a pending approval names (before the grant signs it) breaks its ballot."""
    world.service.groups = TWO
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    r = await world.client.post(
        f"/api/v1/approvals/{record.approval_id}/approve", json={"action_digest": record.action_digest}, headers=bearer(world.tokens["bob"])
    )
    assert r.status_code == 200, r.text
    pending = await world.repo.get(record.approval_id)
    assert pending is not None
    claims = ballot_claims(pending, "bob@acme.example")
    assert claims["credential"]["id"] == _token_id(world, "bob@acme.example")
    (vote,) = pending.votes
    swapped = pending.model_copy(
        update={"votes": [vote.model_copy(update={"credential": s.ApprovalCredential(kind="api_token", id="tok_attacker")})]}
    )
    assert ballot_claims(swapped, "bob@acme.example") != claims
    unnamed = pending.model_copy(update={"votes": [vote.model_copy(update={"credential": None})]})
    assert "credential" not in ballot_claims(unnamed, "bob@acme.example")  # a ballot signed before keeps its claims
