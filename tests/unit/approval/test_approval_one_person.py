"""A two-person rule met by one person (approver probe 2, finding 3), over the in-memory repository.

(a) One approver with two tokens whose names differ only by a trailing space or a fullwidth letter is one
person: the second approval is refused, and no such name can be given to a new token. (b) Whoever holds a
webhook message holding two approvers' one-time links (a chat channel, a log) cannot meet a 2-of-2 alone:
a request takes at most one approval through a link or a chat callback; the others need the approver's token.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from test_approval_service_api import World, bearer, decided, world  # noqa: F401  (the fixture)
from typer.testing import CliRunner

from services.approval import auth, webhooks
from services.approval._token_store import TokenInfo
from services.approval.domain import DEFAULT_GROUPS, ApprovalRecord, GroupsConfig
from services.approval.repository import Endpoint
from tidegate.commands import approvals

P1, P2, REQUESTER = "p1@acme.example", "p2@acme.example", "req@acme.example"
SECRET = webhooks.new_secret()


async def _two_of_two(world: World) -> ApprovalRecord:  # noqa: F811
    """A refund that needs two finance approvals, requested by someone who approves nothing; its message goes to p1's and p2's chat."""
    await world.repo.upsert_endpoint(Endpoint("chat", "http://chat.test/hook", SECRET, "acme", (P1, P2)))
    world.service.groups = GroupsConfig(default=DEFAULT_GROUPS.model_copy(update={"required_approvals": {"financial": 2}}))
    record = await world.service.on_decided(decided(requested_by=REQUESTER), event_id="e1", at=world.clock())
    assert record is not None
    assert record.required_approvals == 2
    return record


async def _token(world: World, approver: str, *, made_before_the_rule: bool = False) -> str:  # noqa: F811
    """A finance token of acme; one made before the rule is stored with its name as given (no check was made then)."""
    token = auth.new_token()
    if made_before_the_rule:
        info = TokenInfo(f"tok_{len(world.repo.token_rows)}", approver, "acme", ("finance",), world.clock())
        world.repo.token_rows[info.token_id] = (auth.hash_token(token), info)
    else:
        await world.repo.add_token(auth.hash_token(token), approver, "acme", ["finance"])
    return token


async def _approve(world: World, record: ApprovalRecord, credential: str) -> httpx.Response:  # noqa: F811
    body = {"action_digest": record.action_digest}
    return await world.client.post(f"/api/v1/approvals/{record.approval_id}/approve", json=body, headers=bearer(credential))


@pytest.mark.parametrize("second_name", ["p1@acme.example ", "ｐ1@acme.example", "P1@acme.example", "p1@acme.example\u200b"])
async def test_one_approver_with_two_tokens_in_two_spellings_cannot_grant_a_two_of_two(
    world: World,  # noqa: F811
    second_name: str,
) -> None:
    """The probe's attack: tokens `p1@…` and `p1@… ` (or a fullwidth `ｐ`) approved a 2-of-2 as two people."""
    record = await _two_of_two(world)
    first = await _approve(world, record, await _token(world, P1))
    assert (first.status_code, first.json()["status"]) == (200, "pending")
    second = await _approve(world, record, await _token(world, second_name, made_before_the_rule=True))
    assert (second.status_code, second.json()["detail"]["code"]) == (409, "already_approved")
    stored = await world.repo.get(record.approval_id)
    assert stored is not None
    assert (stored.status, stored.approvers) == ("pending", [P1])


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("p1@acme.example ", "whitespace"),
        ("p1 @acme.example", "whitespace"),
        ("p1@acme.example\n", "whitespace"),
        ("p1\x07@acme.example", "control character"),
        ("p1\u200b@acme.example", "format character"),
        ("p1\u202e@acme.example", "format character"),
        ("р1@acme.example", "not an email or a login"),  # a Cyrillic р: looks like p1@…, another person
        ("p1@", "not an email or a login"),
        ("", "not an email or a login"),
    ],
)
async def test_a_new_token_refuses_a_name_that_is_not_a_plain_email_or_login(world: World, name: str, why: str) -> None:  # noqa: F811
    with pytest.raises(ValueError, match=why) as refused:
        await world.repo.add_token(auth.hash_token(auth.new_token()), name, "acme", ["finance"])
    assert "\n" not in str(refused.value)


async def test_a_new_token_stores_its_approvers_name_normalised(world: World) -> None:  # noqa: F811
    info = await world.repo.add_token(auth.hash_token(auth.new_token()), "ｐ1@ACME.example", "acme", ["finance"])
    assert info.approver == P1


async def test_a_token_made_before_the_rule_still_works_as_its_person_and_rotates_to_the_plain_name(world: World) -> None:  # noqa: F811
    odd = await _token(world, "P1@acme.example ", made_before_the_rule=True)
    assert await world.repo.groups_of(P1, "acme") == {"finance"}  # a link minted for p1@… finds the groups of that person's tokens
    assert await world.repo.is_registered(P1, "acme")
    rotated = await world.client.post("/api/v1/tokens/rotate", headers=bearer(odd))
    assert rotated.status_code == 200, rotated.text
    (successor,) = [i for _, i in world.repo.token_rows.values() if i.token_id == rotated.json()["token_id"]]
    assert successor.approver == P1


@pytest.mark.parametrize("name", ["p1@acme.example ", "p1\u200b@acme.example", "р1@acme.example"])
def test_token_create_refuses_a_name_that_is_not_a_plain_email_or_login_in_one_line(name: str) -> None:
    result = CliRunner().invoke(approvals.app, ["token", "create", "--approver", name, "--tenant", "acme", "--groups", "finance"])
    assert result.exit_code == 2, result.output
    assert "--approver" in result.output
    assert len(result.output.strip().splitlines()) == 1


async def _links_in_one_message(world: World, record: ApprovalRecord) -> dict[str, str]:  # noqa: F811
    """The request's one webhook message, as a chat channel (or its log) holds it: each approver's link token."""
    world.sender.failures = 0
    assert await world.service.deliver_webhooks() == 1
    links: dict[str, str] = json.loads(world.sender.got[-1][2])["data"]["links"]
    return {who: url.split("#link=")[1] for who, url in links.items()}


async def test_whoever_holds_the_message_with_two_links_cannot_grant_a_two_of_two(world: World) -> None:  # noqa: F811
    record = await _two_of_two(world)
    p2 = await _token(world, P2)
    await _token(world, P1)
    links = await _links_in_one_message(world, record)
    assert sorted(links) == [P1, P2]
    first = await _approve(world, record, links[P1])
    assert (first.status_code, first.json()["status"]) == (200, "pending")
    page = (await world.client.get(f"/api/v1/approvals/{record.approval_id}", headers=bearer(links[P2]))).json()
    assert (page["can_decide"], page["cannot_decide_code"]) == (False, "own_token_needed")
    second = await _approve(world, record, links[P2])
    detail = second.json()["detail"]
    assert (second.status_code, detail["code"]) == (403, "own_token_needed")
    assert "sign in with your API token" in detail["message"]
    assert "\n" not in detail["message"]
    stored = await world.repo.get(record.approval_id)
    assert stored is not None
    assert (stored.status, stored.approvers) == ("pending", [P1])
    assert not await world.repo.link_spent(auth.verify_link(world.service.key, links[P2], now=world.clock()).link_id)
    own = await _approve(world, record, p2)  # p2 signs in with their own token: the second approval counts
    assert (own.status_code, own.json()["status"], own.json()["approvers"]) == (200, "granted", [P1, P2])


async def test_one_approval_by_link_counts_beside_one_by_token(world: World) -> None:  # noqa: F811
    record = await _two_of_two(world)
    p1 = await _token(world, P1)
    await _token(world, P2)
    links = await _links_in_one_message(world, record)
    assert (await _approve(world, record, p1)).json()["status"] == "pending"
    granted = await _approve(world, record, links[P2])
    assert (granted.status_code, granted.json()["status"]) == (200, "granted")


async def _callback(world: World, record: ApprovalRecord, approver: str, msg_id: str) -> httpx.Response:  # noqa: F811
    data: dict[str, Any] = {"approval_id": record.approval_id, "approver": approver, "decision": "approve"}
    payload = json.dumps({"type": "approval.decision", "data": data | {"action_digest": record.action_digest}}).encode()
    headers = webhooks.signed_headers(SECRET, msg_id, int(world.clock().timestamp()), payload)
    return await world.client.post("/api/v1/callbacks/acme/chat", content=payload, headers=headers)


async def test_a_chat_callback_counts_as_a_link_whoever_it_names(world: World) -> None:  # noqa: F811
    """The endpoint's secret signs callbacks in any of its approvers' names: the chat tool is one party, not two people."""
    record = await _two_of_two(world)
    await _token(world, P1)
    await _token(world, P2)
    links = await _links_in_one_message(world, record)
    first = await _callback(world, record, P1, "msg_1")
    assert (first.status_code, first.json()["status"]) == (200, "pending")
    by_chat = await _callback(world, record, P2, "msg_2")
    assert (by_chat.status_code, by_chat.json()["detail"]["code"]) == (403, "own_token_needed")
    by_link = await _approve(world, record, links[P2])
    assert (by_link.status_code, by_link.json()["detail"]["code"]) == (403, "own_token_needed")


async def test_a_reject_through_a_link_still_settles_a_two_of_two(world: World) -> None:  # noqa: F811
    record = await _two_of_two(world)
    await _token(world, P1)
    await _token(world, P2)
    links = await _links_in_one_message(world, record)
    assert (await _approve(world, record, links[P1])).json()["status"] == "pending"
    rejected = await world.client.post(f"/api/v1/approvals/{record.approval_id}/reject", json={}, headers=bearer(links[P2]))
    assert (rejected.status_code, rejected.json()["status"]) == (200, "rejected")
