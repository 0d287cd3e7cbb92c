"""The approval service's database login makes a vote the service never counted count in the grant (attacker3 F2).

The attacker holds only `tidegate_approval`'s login. A refund needs two approvals; Bob approved it. Before Cy gives the
second, the login writes into the pending row a vote marked counted that no approval the service signed stands behind:
Mallory's (who never voted), or a second one of Bob's placed before his own, each saying `should_not_need_approval`, the
signal `tidegate autonomy report` counts to loosen the policy, and the reason a grant takes from its first counted vote.
Only the vote each counted approval's ballot covers counts: the grant signs the others as not counted, and neither its
reason nor the autonomy report takes the login's word.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from approval_harness import StartApproval, bearer

from tidegate.ops.autonomy import NEEDLESS, said_needless

pytestmark = pytest.mark.integration

GROUPS = """
default:
  risk_groups: {financial: [finance], write_low: [support], unknown: [security]}
  required_approvals: {financial: 2}
"""
WaitFor = Callable[..., Awaitable[Any]]


FORGED: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "someone_who_never_voted": lambda bobs: {**bobs, "approver": "mallory@acme.example", "review_reason": NEEDLESS},
    "the_approver_again_before_their_vote": lambda bobs: {**bobs, "review_reason": NEEDLESS, "comment": "no need to ask"},
}


@pytest.mark.parametrize("forged", FORGED)
async def test_a_vote_the_login_marks_counted_is_not_counted_in_the_grant(
    start_approval: StartApproval,
    http: httpx.AsyncClient,
    approval_login: asyncpg.Connection,
    wait_for: WaitFor,
    tmp_path: Path,
    forged: str,
) -> None:
    groups = tmp_path / "groups.yaml"
    groups.write_text(GROUPS)
    h = await start_approval(groups_file=groups)
    bob = await h.token("bob@acme.example", ["finance"])
    cy = await h.token("cy@acme.example", ["finance"])
    await h.escalate(d := h.decided())
    record = await h.request_for(d.action_id, wait_for)
    url = f"{h.url}/api/v1/approvals/{record.approval_id}"
    first = await http.post(f"{url}/approve", json={"action_digest": record.action_digest}, headers=bearer(bob))
    assert (first.status_code, first.json()["status"]) == (200, "pending"), first.text

    row = json.loads(await approval_login.fetchval("SELECT record FROM approval.approvals WHERE approval_id = $1", record.approval_id))
    (bobs,) = row["votes"]
    row["votes"] = [FORGED[forged](bobs), bobs]  # marked counted, before Bob's own: the grant's reason is its first counted one's
    await approval_login.execute(
        "UPDATE approval.approvals SET record = jsonb_set(record, '{votes}', $2::jsonb) WHERE approval_id = $1",
        record.approval_id, json.dumps(row["votes"]),
    )  # fmt: skip
    shown = (await http.get(url, headers=bearer(cy))).json()
    assert [v["counted"] for v in shown["votes"]] == [False, True], "the API shows the login's vote as counted"
    assert shown["approvers"] == ["bob@acme.example"]

    second = await http.post(f"{url}/approve", json={"action_digest": record.action_digest}, headers=bearer(cy))
    assert (second.status_code, second.json()["status"]) == (200, "granted"), second.text

    async def grant() -> Any:
        events = [e for e in await h.approvals() if e.data.approval_id == record.approval_id and e.type == "tidegate.approval.granted"]
        return events[0] if events else None

    event = await wait_for(grant, what="the grant on the bus")
    assert event.data.review_reason is None, "the grant took its reason from the login's vote"
    assert [(v.approver, v.counted) for v in event.data.votes] == [
        (FORGED[forged](bobs)["approver"], False),
        ("bob@acme.example", True),
        ("cy@acme.example", True),
    ]
    assert said_needless([event]) == set(), "the autonomy report counts the login's vote as an approver's"
