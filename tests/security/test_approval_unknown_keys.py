"""A request row with a key this release does not know: read, and the key decides nothing.

The operator rolled the approval service back one release: the newer release had added a key to its rows (23
`decision`, 24 `settled_event`), and the older one, reading rows strictly, stopped at start (`ValidationError …
extra_forbidden`, restarted for ever) until the rollback's SQL took the key out of every row (upgrade24, found by running
"Rolling back past release 24"). Now a key the release does not know is left out when the row is read, as that SQL would
have.

The attacker holds only `tidegate_approval`'s login: a key it adds (words a later release might use for what grants)
neither stops the service nor grants anything: the request is shown, counted and decided as if the key were not there.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from approval_harness import ApprovalHarness, StartApproval, bearer

pytestmark = pytest.mark.integration

WaitFor = Callable[..., Awaitable[Any]]
GRANTING = {"granted_by_policy": True, "required_approvals_v2": 0, "approved": True, "proof": "trust me", "status_v2": "granted"}


async def add_keys(login: asyncpg.Connection, approval_id: str, keys: dict[str, Any]) -> None:
    await login.execute("UPDATE approval.approvals SET record = record || $2::jsonb WHERE approval_id = $1", approval_id, json.dumps(keys))


async def pending(start: StartApproval, wait_for: WaitFor, **args: Any) -> tuple[ApprovalHarness, str, Any]:
    """A started service, bob's token and a request waiting for him (its record)."""
    h = await start()
    bob = await h.token("bob@acme.example", ["finance"])
    await h.escalate(d := h.decided(args={"order_id": "O-1", **args}))
    return h, bob, await h.request_for(d.action_id, wait_for)


async def test_a_request_a_newer_release_wrote_a_key_into_is_read_and_decided(
    start_approval: StartApproval, http: httpx.AsyncClient, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    _, bob, record = await pending(start_approval, wait_for, payee_id="cus_1002", amount_usd=899.0)
    await add_keys(approval_login, record.approval_id, {"kept_by_release_25": {"event": "…"}})

    again = await start_approval()  # the service started on such a row (release 23 stopped here, for ever)
    url = f"{again.url}/api/v1/approvals/{record.approval_id}"
    shown = await http.get(url, headers=bearer(bob))
    assert shown.status_code == 200, shown.text
    assert (shown.json()["status"], shown.json()["not_as_signed"]) == ("pending", None)
    approved = await http.post(f"{url}/approve", json={"action_digest": record.action_digest}, headers=bearer(bob))
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "granted"


async def test_keys_the_login_adds_grant_nothing(
    start_approval: StartApproval, http: httpx.AsyncClient, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    h, bob, record = await pending(start_approval, wait_for, payee_id="cus_evil", amount_usd=9000.0)
    url = f"{h.url}/api/v1/approvals/{record.approval_id}"
    before = (await http.get(url, headers=bearer(bob))).json()

    await add_keys(approval_login, record.approval_id, GRANTING)
    shown = (await http.get(url, headers=bearer(bob))).json()
    assert shown == before, "a key the release does not know changed what the request shows"
    assert not [k for k in GRANTING if k in shown]

    # a rewritten row stays refused, whatever key says otherwise
    await approval_login.execute(
        "UPDATE approval.approvals SET record = jsonb_set(record, '{args,amount_usd}', '9.0') || $2::jsonb WHERE approval_id = $1",
        record.approval_id,
        json.dumps({"not_as_signed": None, "proven": True}),
    )
    approved = await http.post(f"{url}/approve", json={"action_digest": record.action_digest}, headers=bearer(bob))
    assert approved.status_code == 409, approved.text
    assert approved.json()["detail"]["code"] == "request_unproven"
    row = json.loads(await approval_login.fetchval("SELECT record FROM approval.approvals WHERE approval_id = $1", record.approval_id))
    assert row["status"] == "pending"
