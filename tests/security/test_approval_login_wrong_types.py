"""One request row of the wrong shape, written with the approval service's database login, stops nothing else.

The attacker holds only `tidegate_approval`'s login (its credentials file on the host). It inserts a copy of a pending
request whose record keeps a field of the wrong type (`"required_approvals": "many"`, `"reasons": "…"`): before,
`read_record` raised pydantic's `int_parsing` inside every listing and the sweep, so the tenant's listings and `show`
of any request beside it answered 500, and the sweep failed each round (no request escalated); a text in `reasons`
made every `?reason=` listing 500 (CI23: a junk row left in the shared database failed two later tests). Now that row
alone is refused: left out, logged once, counted, and answered `409 request_unreadable` when asked for.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from approval_harness import StartApproval, bearer

from servicekit.metrics import ROWS_REFUSED

pytestmark = pytest.mark.integration

WaitFor = Callable[..., Awaitable[Any]]
JUNK = f"ap-junk-{uuid.uuid4().hex[:12]}"
# Copy a request's row under a new id and action, with fields of the wrong type, as the login can.
_INSERT_JUNK = (
    "INSERT INTO approval.approvals (approval_id, kind, action_id, task_id, tenant_id, tool, status, version, created_at, expires_at, "
    "record) SELECT $2, kind, action_id || '-junk', task_id, tenant_id, tool, status, version, created_at, expires_at, "
    "record || $3::jsonb || jsonb_build_object('approval_id', $2::text, 'action_id', action_id || '-junk') "
    "FROM approval.approvals WHERE approval_id = $1"
)


def refused() -> float:
    return float(ROWS_REFUSED.labels("approval", "approvals", "invalid")._value.get())


async def test_one_wrong_typed_row_is_refused_alone_and_the_others_are_listed_shown_and_escalated(
    start_approval: StartApproval,
    http: httpx.AsyncClient,
    approval_login: asyncpg.Connection,
    wait_for: WaitFor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = await start_approval(escalate_after_s=3.0)
    bob = await h.token("bob@acme.example", ["finance"])
    stranger = await h.token("eve@other.example", ["finance"], tenant=f"{h.tenant}-other")
    await h.escalate(first := h.decided(args={"payee_id": "cus_1002", "amount_usd": 899.0, "order_id": "O-1"}))
    genuine = await h.request_for(first.action_id, wait_for)
    before = refused()
    try:
        wrong = {"required_approvals": "many", "reasons": "needs_human_approval", "rationale": None}
        await approval_login.execute(_INSERT_JUNK, genuine.approval_id, JUNK, json.dumps(wrong))
        await h.escalate(second := h.decided(args={"payee_id": "cus_1003", "amount_usd": 450.0, "order_id": "O-2"}))
        waiting = await h.request_for(second.action_id, wait_for)

        async def escalated() -> Any:  # the sweep goes on past the junk row (before: int_parsing at every round, none escalated)
            current = await h.repo.get(waiting.approval_id)
            return current if current and current.escalated_at else None

        await wait_for(escalated, what="the sweep to escalate the request opened after the junk row")

        listed = await http.get(f"{h.url}/api/v1/approvals", headers=bearer(bob))
        assert listed.status_code == 200, listed.text
        assert {r["approval_id"] for r in listed.json()} == {genuine.approval_id, waiting.approval_id}
        by_reason = await http.get(f"{h.url}/api/v1/approvals", params={"reason": "needs_human_approval"}, headers=bearer(bob))
        assert by_reason.status_code == 200, by_reason.text
        assert JUNK not in {r["approval_id"] for r in by_reason.json()}
        # its same-payee section searches the tenant's requests, the junk row among them
        shown = await http.get(f"{h.url}/api/v1/approvals/{genuine.approval_id}", headers=bearer(bob))
        assert shown.status_code == 200, shown.text

        junk = await http.get(f"{h.url}/api/v1/approvals/{JUNK}", headers=bearer(bob))
        assert junk.status_code == 409, junk.text
        assert junk.json()["detail"]["code"] == "request_unreadable"
        assert "required_approvals" in junk.json()["detail"]["message"]
        digest = {"action_digest": genuine.action_digest}
        approved = await http.post(f"{h.url}/api/v1/approvals/{JUNK}/approve", json=digest, headers=bearer(bob))
        assert (approved.status_code, approved.json()["detail"]["code"]) == (409, "request_unreadable")
        elsewhere = await http.get(f"{h.url}/api/v1/approvals/{JUNK}", headers=bearer(stranger))  # another tenant learns nothing
        assert (elsewhere.status_code, elsewhere.json()["detail"]["code"]) == (404, "not_found")

        assert refused() > before
        told = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and JUNK in r.getMessage()]
        assert told, "the refused row is not logged"
        assert "required_approvals" in told[0]
        assert h.tenant in told[0]
        assert len(told) == len(set(told)), "the row is told once per problem, not at every sweep"
        status = await approval_login.fetchval("SELECT status FROM approval.approvals WHERE approval_id = $1", JUNK)
        assert status == "pending", "the service acted on a row it cannot read"
    finally:  # the session's database is shared: a row no release reads would be refused by later tests' services
        await approval_login.execute("DELETE FROM approval.approvals WHERE approval_id = $1", JUNK)


async def test_a_task_event_of_the_wrong_shape_is_left_out_and_the_request_is_shown(
    start_approval: StartApproval, http: httpx.AsyncClient, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    """A result kept for the request's task whose `result` is a JSON text: before, `show` of every request of the task was 500."""
    h = await start_approval()
    bob = await h.token("bob@acme.example", ["finance"])
    await h.escalate(d := h.decided(args={"payee_id": "cus_1002", "amount_usd": 899.0, "order_id": "O-1"}))
    record = await h.request_for(d.action_id, wait_for)
    event_id = f"ev-junk-{uuid.uuid4().hex[:12]}"
    before = float(ROWS_REFUSED.labels("approval", "task_events", "invalid")._value.get())
    try:
        await approval_login.execute(
            "INSERT INTO approval.task_events (event_id, tenant_id, task_id, action_id, type, tool, at, result) "
            "VALUES ($1, $2, $3, 'a-earlier', 'tidegate.action.succeeded', 'tag_ticket', now(), '\"done\"')",
            event_id,
            record.tenant_id,
            record.task_id,
        )
        shown = await http.get(f"{h.url}/api/v1/approvals/{record.approval_id}", headers=bearer(bob))
        assert shown.status_code == 200, shown.text
        assert "a-earlier" not in {e.get("action_id") for e in shown.json()["context"]}
        assert float(ROWS_REFUSED.labels("approval", "task_events", "invalid")._value.get()) > before
    finally:
        await approval_login.execute("DELETE FROM approval.task_events WHERE event_id = $1", event_id)


async def test_a_page_of_wrong_typed_rows_hides_no_request_behind_it(
    start_approval: StartApproval, http: httpx.AsyncClient, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    """The attacker writes as many junk rows as a page holds, dated after every request (newest first: they lead every
    listing). Each was left out of the page, which came back empty and without `X-Next-Cursor`: bob's listing showed no
    request at all, and no next page to find one. The rows past them are read until the page is full."""
    h = await start_approval()
    bob = await h.token("bob@acme.example", ["finance"])
    await h.escalate(d := h.decided(args={"payee_id": "cus_1002", "amount_usd": 899.0, "order_id": "O-1"}))
    genuine = await h.request_for(d.action_id, wait_for)
    junk = [f"ap-junk-{uuid.uuid4().hex[:12]}" for _ in range(2)]
    try:
        for n, approval_id in enumerate(junk):
            wrong = {"required_approvals": "many", "action_id": f"{genuine.action_id}-junk{n}"}
            await approval_login.execute(
                "INSERT INTO approval.approvals (approval_id, kind, action_id, task_id, tenant_id, tool, status, version, "
                "created_at, expires_at, record) SELECT $2, kind, action_id || $4, task_id, tenant_id, tool, status, version, "
                "created_at + interval '1 day', expires_at, record || $3::jsonb || jsonb_build_object('approval_id', $2::text) "
                "FROM approval.approvals WHERE approval_id = $1",
                genuine.approval_id, approval_id, json.dumps(wrong), f"-junk{n}",
            )  # fmt: skip
        listed = await http.get(f"{h.url}/api/v1/approvals", params={"status": "all", "limit": 2}, headers=bearer(bob))
        assert listed.status_code == 200, listed.text
        assert genuine.approval_id in {r["approval_id"] for r in listed.json()}, "hidden behind a page of junk rows"
        assert not set(junk) & {r["approval_id"] for r in listed.json()}
    finally:
        await approval_login.execute("DELETE FROM approval.approvals WHERE approval_id = ANY($1::text[])", junk)


async def test_a_sweep_round_of_wrong_typed_rows_stops_no_escalation_behind_them(
    start_approval: StartApproval, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    """The attacker writes 500 junk rows (as many as a sweep round reads), pending and older than every request. A refused
    row is never escalated nor expired, so it stays: each round read the same 500 and left them out, and a request opened
    after them was never escalated. The round reads on past them, oldest first."""
    h = await start_approval(escalate_after_s=3.0)
    await h.escalate(first := h.decided(args={"payee_id": "cus_1002", "amount_usd": 899.0, "order_id": "O-1"}))
    genuine = await h.request_for(first.action_id, wait_for)
    prefix = f"ap-junk-{uuid.uuid4().hex[:8]}-"
    try:
        await approval_login.execute(
            "INSERT INTO approval.approvals (approval_id, kind, action_id, task_id, tenant_id, tool, status, version, created_at, "
            "expires_at, record) SELECT $2 || g, kind, action_id || '-junk' || g, task_id, tenant_id, tool, 'pending', version, "
            "created_at - interval '1 hour', expires_at, record || '{\"required_approvals\": \"many\"}'::jsonb "
            "|| jsonb_build_object('approval_id', $2 || g) FROM approval.approvals, generate_series(1, 500) g WHERE approval_id = $1",
            genuine.approval_id, prefix,
        )  # fmt: skip
        await h.escalate(second := h.decided(args={"payee_id": "cus_1003", "amount_usd": 450.0, "order_id": "O-2"}))
        waiting = await h.request_for(second.action_id, wait_for)

        async def escalated() -> Any:
            current = await h.repo.get(waiting.approval_id)
            return current if current and current.escalated_at else None

        await wait_for(escalated, what="the sweep to escalate the request opened after 500 junk rows", timeout=60)
    finally:
        await approval_login.execute("DELETE FROM approval.approvals WHERE approval_id LIKE $1", prefix + "%")
