"""`GET /api/v1/approvals?action=ID` over PostgreSQL: from the action id a system of record shows to its approval request."""

from __future__ import annotations

from typing import Any

import httpx
from approval_harness import StartApproval


async def test_the_requests_of_one_action_are_listed_by_its_id(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: Any
) -> None:
    h = await start_approval()
    bob = await h.token("bob@acme.example", ["finance"])
    actions = [h.decided() for _ in range(3)]
    for decided in actions:
        await h.escalate(decided)
        await h.request_for(decided.action_id, wait_for)
    wanted = actions[1].action_id
    stored = await h.repo.search(tenant_id=h.tenant, status=None, action_id=wanted)
    assert [r.action_id for r in stored] == [wanted]

    headers = {"Authorization": f"Bearer {bob}"}
    for status in ("pending", "all"):
        listed = (await http.get(f"{h.url}/api/v1/approvals", params={"action": wanted, "status": status}, headers=headers)).json()
        assert [r["approval_id"] for r in listed] == [stored[0].approval_id], status
    none = await http.get(f"{h.url}/api/v1/approvals", params={"action": "no-such-action", "status": "all"}, headers=headers)
    assert none.status_code == 200
    assert none.json() == []
