"""The approval service's database login rewrites what an earlier approver said before the grant signs it (bindattack).

The attacker holds only `tidegate_approval`'s login. Bob approved a request that needs two approvals; before Cy gives the
second, the login rewrites Bob's vote in the pending row: its comment, its reason (`should_not_need_approval`, the signal
`tidegate autonomy report` counts to loosen the policy), its time, how it came (`via`), or the credential that proved him.
The grant would sign that as what Bob said. A vote so changed is no longer Bob's approval: it is not counted (the service's
signature of his approval, his ballot, covers the whole vote), no grant is signed, and Bob may approve again.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from approval_harness import ApprovalHarness, StartApproval, bearer

from servicekit.metrics import ROWS_REFUSED

pytestmark = pytest.mark.integration

GROUPS = """
default:
  risk_groups: {financial: [finance], write_low: [support], unknown: [security]}
  required_approvals: {financial: 2}
"""
WaitFor = Callable[..., Awaitable[Any]]


async def start(start_approval: StartApproval, tmp_path: Path) -> ApprovalHarness:
    groups = tmp_path / "groups.yaml"
    groups.write_text(GROUPS)
    return await start_approval(groups_file=groups)


EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "comment": lambda v: v.update(comment="fine by me, and by the CFO"),
    "review_reason": lambda v: v.update(review_reason="should_not_need_approval"),
    "at": lambda v: v.update(at="2026-01-01T00:00:00+00:00"),
    "via": lambda v: v.update(via="link"),
    "credential": lambda v: v.update(credential={**v["credential"], "id": "tok_someoneelse"}),
}


@pytest.mark.parametrize("field", EDITS)
async def test_an_earlier_approvers_vote_the_login_rewrites_is_not_signed_into_the_grant(
    start_approval: StartApproval,
    http: httpx.AsyncClient,
    approval_login: asyncpg.Connection,
    wait_for: WaitFor,
    tmp_path: Path,
    field: str,
) -> None:
    h = await start(start_approval, tmp_path)
    bob = await h.token("bob@acme.example", ["finance"])
    cy = await h.token("cy@acme.example", ["finance"])
    await h.escalate(d := h.decided())
    record = await h.request_for(d.action_id, wait_for)
    approve = f"{h.url}/api/v1/approvals/{record.approval_id}/approve"
    said = {"action_digest": record.action_digest, "comment": "ok for this customer"}
    first = await http.post(approve, json=said, headers=bearer(bob))
    assert (first.status_code, first.json()["status"]) == (200, "pending"), first.text

    row = json.loads(await approval_login.fetchval("SELECT record FROM approval.approvals WHERE approval_id = $1", record.approval_id))
    (vote,) = row["votes"]
    assert vote["approver"] == "bob@acme.example"
    assert vote["credential"]["kind"] == "api_token"
    EDITS[field](vote)
    await approval_login.execute(
        "UPDATE approval.approvals SET record = jsonb_set(record, '{votes}', $2::jsonb) WHERE approval_id = $1",
        record.approval_id, json.dumps(row["votes"]),
    )  # fmt: skip
    refused = ROWS_REFUSED.labels("approval", "approvals", "invalid")._value.get()

    second = await http.post(approve, json={"action_digest": record.action_digest, "comment": "ok"}, headers=bearer(cy))
    assert second.status_code == 200, second.text
    assert second.json()["status"] == "pending", f"the {field} the login wrote into Bob's vote was signed into a grant"
    assert second.json()["approvers"] == ["cy@acme.example"]
    assert ROWS_REFUSED.labels("approval", "approvals", "invalid")._value.get() > refused  # told, not silent
    granted = [e for e in await h.approvals() if e.data.approval_id == record.approval_id and e.type == "tidegate.approval.granted"]
    assert not granted

    again = await http.post(approve, json=said, headers=bearer(bob))  # Bob approves again: his own words are signed
    assert (again.status_code, again.json()["status"]) == (200, "granted"), again.text

    async def grant() -> Any:
        events = [e for e in await h.approvals() if e.data.approval_id == record.approval_id and e.type == "tidegate.approval.granted"]
        return events[0] if events else None

    event = await wait_for(grant, what="the grant on the bus")
    bobs = [v for v in event.data.votes if v.approver == "bob@acme.example" and v.counted]
    assert [(v.comment, v.review_reason, v.via) for v in bobs] == [("ok for this customer", None, "token")]
    assert bobs[0].credential is not None
    assert bobs[0].credential.id != "tok_someoneelse"
