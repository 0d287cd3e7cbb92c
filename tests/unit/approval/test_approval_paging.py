"""Every request and delivery can be listed, page by page: pending soonest to expire first, nothing hidden past a cap."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

from test_approval_service_api import World, bearer, decided, world  # noqa: F401  (the fixture)

from services.approval import auth, webhooks
from services.approval._limits import NEXT_CURSOR
from services.approval.repository import Endpoint


async def _requests(w: World, count: int) -> list[str]:
    ids = []
    for n in range(count):
        record = await w.service.on_decided(decided(f"a-{n}"), event_id=f"e{n}", at=w.clock())
        assert record is not None
        ids.append(record.approval_id)
        w.clock.now += timedelta(seconds=1)
    return ids


async def _all_pages(w: World, url: str, params: dict[str, Any], token: str) -> list[list[str]]:
    pages: list[list[str]] = []
    while True:
        answer = await w.client.get(url, params=params, headers=bearer(token))
        assert answer.status_code == 200, answer.text
        pages.append([f"{item['approval_id']}/{item.get('delivery_id', '')}" for item in answer.json()])
        if NEXT_CURSOR not in answer.headers:
            return pages
        params = params | {"cursor": answer.headers[NEXT_CURSOR]}


async def test_pending_come_soonest_to_expire_first_and_every_one_is_reachable(world: World) -> None:  # noqa: F811
    ids = await _requests(world, 5)
    pages = await _all_pages(world, "/api/v1/approvals", {"limit": 2}, world.tokens["bob"])
    assert [[i.split("/")[0] for i in page] for page in pages] == [ids[0:2], ids[2:4], ids[4:5]]


async def test_one_past_its_expiry_is_not_listed_pending_and_does_not_crowd_a_page(world: World) -> None:  # noqa: F811
    ids = await _requests(world, 3)
    world.clock.now = (await world.repo.get(ids[1])).expires_at  # type: ignore[union-attr]  # the first two are past it
    listed = (await world.client.get("/api/v1/approvals", params={"limit": 1}, headers=bearer(world.tokens["bob"]))).json()
    assert [r["approval_id"] for r in listed] == [ids[2]]


async def test_other_statuses_page_newest_first(world: World) -> None:  # noqa: F811
    ids = await _requests(world, 3)
    pages = await _all_pages(world, "/api/v1/approvals", {"limit": 2, "status": "all"}, world.tokens["bob"])
    assert [[i.split("/")[0] for i in page] for page in pages] == [ids[::-1][0:2], ids[::-1][2:3]]


async def test_a_cursor_not_given_by_this_listing_is_invalid_param(world: World) -> None:  # noqa: F811
    await _requests(world, 2)
    first = await world.client.get("/api/v1/approvals", params={"limit": 1}, headers=bearer(world.tokens["bob"]))
    other_order = {"status": "all", "cursor": first.headers[NEXT_CURSOR]}
    for params in ({"cursor": "bogus"}, other_order):
        answer = await world.client.get("/api/v1/approvals", params=params, headers=bearer(world.tokens["bob"]))
        assert answer.status_code == 422
        assert answer.json()["detail"]["code"] == "invalid_param"


async def test_deliveries_filter_by_status_and_page_past_the_cap(world: World) -> None:  # noqa: F811
    await world.repo.upsert_endpoint(Endpoint("chat", "http://chat.test/hook", webhooks.new_secret(), "acme", ("bob@acme.example",)))
    admin = auth.new_token()
    await world.repo.add_token(auth.hash_token(admin), "ada@acme.example", "acme", ["admin"])
    ids = await _requests(world, 5)
    await world.service.deliver_webhooks()  # the first attempt is refused (503): that message stays pending, the others go
    url = "/api/v1/webhooks/deliveries"
    pages = await _all_pages(world, url, {"limit": 2}, admin)
    assert [[i.split("/")[0] for i in page] for page in pages] == [ids[::-1][0:2], ids[::-1][2:4], ids[::-1][4:5]]
    assert len({i for page in pages for i in page}) == 5
    pending = (await world.client.get(url, params={"status": "pending"}, headers=bearer(admin))).json()
    delivered = (await world.client.get(url, params={"status": "delivered"}, headers=bearer(admin))).json()
    assert (len(pending), len(delivered)) == (1, 4)
    assert (await world.client.get(url, params={"status": "bogus"}, headers=bearer(admin))).status_code == 422


async def test_a_cursor_of_other_filters_or_a_crafted_deep_one_is_invalid_param_never_a_500(world: World) -> None:  # noqa: F811
    """Security review 3: a cursor from `tool=a` was taken for `tool=b` (a wrong page), and base64 of 5,000 `[` made the
    JSON parser recurse until it failed (a 500 and a traceback per request, for any token holder)."""
    await _requests(world, 2)
    first = await world.client.get("/api/v1/approvals", params={"limit": 1, "tool": "issue_refund"}, headers=bearer(world.tokens["bob"]))
    deep = base64.urlsafe_b64encode(b"[" * 5000).decode()
    for params in ({"tool": "tag_ticket", "cursor": first.headers[NEXT_CURSOR]}, {"cursor": deep}):
        answer = await world.client.get("/api/v1/approvals", params=params, headers=bearer(world.tokens["bob"]))
        assert (answer.status_code, answer.json()["detail"]["code"]) == (422, "invalid_param")
    deep_short = base64.urlsafe_b64encode(b"[" * 700).decode()  # under the length bound: the parser's own depth is caught
    answer = await world.client.get("/api/v1/approvals", params={"cursor": deep_short}, headers=bearer(world.tokens["bob"]))
    assert (answer.status_code, answer.json()["detail"]["code"]) == (422, "invalid_param")
