"""Paging over PostgreSQL: every pending request (soonest to expire first) and every delivery is reachable, page by page."""

from __future__ import annotations

from typing import Any

import httpx
from approval_harness import Receiver, StartApproval

from services.approval import webhooks
from services.approval._limits import NEXT_CURSOR
from services.approval.repository import Endpoint

COUNT = 5


async def _pages(http: httpx.AsyncClient, url: str, params: dict[str, Any], token: str) -> list[list[dict[str, Any]]]:
    pages = []
    while True:
        answer = await http.get(url, params=params, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text
        pages.append(answer.json())
        if NEXT_CURSOR not in answer.headers:
            return pages
        params = params | {"cursor": answer.headers[NEXT_CURSOR]}


async def test_requests_and_deliveries_page_in_order_over_postgres(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: Any
) -> None:
    h = await start_approval()
    async with Receiver.listening(failures=0) as receiver:
        await h.repo.upsert_endpoint(Endpoint("chat", receiver.url, webhooks.new_secret(), h.tenant, ()))
        bob = await h.token("bob@acme.example", ["finance"])
        admin = await h.token("ada@acme.example", ["admin"])
        for _ in range(COUNT):
            decided = h.decided()
            await h.escalate(decided)
            await h.request_for(decided.action_id, wait_for)
        stored = await h.repo.search(tenant_id=h.tenant, status="pending")
        by_expiry = [r.approval_id for r in sorted(stored, key=lambda r: (r.expires_at, r.approval_id))]

        pages = await _pages(http, f"{h.url}/api/v1/approvals", {"limit": 2}, bob)
        assert [len(p) for p in pages] == [2, 2, 1]
        assert [r["approval_id"] for p in pages for r in p] == by_expiry

        async def delivered() -> bool:
            return len(await h.repo.deliveries(tenant_id=h.tenant, status="delivered")) == COUNT

        await wait_for(delivered, what="every message delivered")
        log = await _pages(http, f"{h.url}/api/v1/webhooks/deliveries", {"limit": 2, "status": "delivered"}, admin)
        assert [len(p) for p in log] == [2, 2, 1]
        assert {d["approval_id"] for p in log for d in p} == set(by_expiry)
        failed = await http.get(
            f"{h.url}/api/v1/webhooks/deliveries", params={"status": "failed"}, headers={"Authorization": f"Bearer {admin}"}
        )
        assert failed.json() == []
