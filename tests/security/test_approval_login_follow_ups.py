"""The approval service's database login turns a waiting refund into a follow-up, and an approver's answer becomes a signed finding.

The attacker holds only `tidegate_approval`'s login. A 90 USD refund to a new payee waits for approval. The login rewrites
its row into a follow-up of an unknown outcome ("timeout: payments did not answer", the executor's own wording): seen
live on a whole deployment, `tidegate approvals list/show` showed it unflagged, bob's "approve" (it happened) was
published as the service's signed `approval.resolved confirmed_done`, and `tidegate audit explain` told a human's
finding that a refund never made had been made. Either finding moves the call's reservation in the policy (settled and
its payee learned; or released). A follow-up now keeps the executor's signed `action.unknown` and is checked against it
as a request is against the policy's decision: the rewritten one is flagged and can be resolved neither way.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from approval_harness import ApprovalHarness, StartApproval, bearer

from schemas import ActionResultData, ActionUnknown, ErrorInfo
from servicekit import KitSettings
from servicekit.metrics import ROWS_REFUSED
from services.audit import PostgresAuditLog, SearchFilters
from services.audit.app import build as build_audit
from services.audit.settings import AuditSettings
from tidegate.commands._approvals_adopt import adopt_pending

pytestmark = pytest.mark.integration

WaitFor = Callable[..., Awaitable[Any]]
REFUND = {"payee_id": "cus_mallory", "amount_usd": 90.0, "order_id": "O-1001"}
UNKNOWN = "the call may or may not have taken effect; check the system of record and record what happened (never retry blindly)"


async def rewrite(login: asyncpg.Connection, approval_id: str, kind: str | None = None, **fields: Any) -> None:
    row = json.loads(await login.fetchval("SELECT record FROM approval.approvals WHERE approval_id = $1", approval_id))
    row.update(fields | ({"kind": kind} if kind else {}))
    update = "UPDATE approval.approvals SET record = $2::jsonb, kind = coalesce($3, kind) WHERE approval_id = $1"
    await login.execute(update, approval_id, json.dumps(row), kind)


def refused(reason: str) -> float:
    return float(ROWS_REFUSED.labels("approval", "approvals", reason)._value.get())


async def resolutions(h: ApprovalHarness, action_id: str) -> list[str]:
    return [e.data.resolution for e in await h.approvals() if e.data.action_id == action_id and e.type == "tidegate.approval.resolved"]


async def unknown(h: ApprovalHarness, wait_for: WaitFor) -> Any:
    """The follow-up the service opens for an escalated refund that was granted, ran, and ended `unknown` (the executor's signed event)."""
    await h.escalate(d := h.decided(args=REFUND))
    result = ActionResultData(
        action_id=d.action_id, task_id=d.task_id, tenant_id=h.tenant, tool=d.tool, status="unknown", attempts=1, duration_ms=10_000,
        error=ErrorInfo(type="timeout", message="payments did not answer within 10 s", maybe_applied=True),
    )  # fmt: skip
    await h.publish("actions.results", ActionUnknown.build(result, source="tidegate/executor"))
    return await wait_for(lambda: h.repo.get_by_action(d.action_id, "follow_up", tenant_id=h.tenant), what="follow-up")


async def test_a_waiting_refund_the_login_made_a_follow_up_is_flagged_and_cannot_be_resolved(
    start_approval: StartApproval, http: httpx.AsyncClient, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    h = await start_approval()
    bob = await h.token("bob@acme.example", ["finance"])
    await h.escalate(d := h.decided(args=REFUND))
    record = await h.request_for(d.action_id, wait_for)
    await rewrite(
        approval_login, record.approval_id, "follow_up",
        reasons=[{"code": "outcome_unknown", "policy_id": "executor", "message": UNKNOWN}],
        facts={"attempts": 1, "duration_ms": 10000.0, "idempotency_key": d.action_id},
        result_error={"type": "timeout", "message": "payments did not answer within 10 s", "retryable": False, "maybe_applied": True},
    )  # fmt: skip
    counted = refused("invalid")
    url = f"{h.url}/api/v1/approvals/{record.approval_id}"
    shown = (await http.get(url, headers=bearer(bob))).json()
    assert shown["kind"] == "follow_up"
    assert shown["not_as_signed"], "a follow-up the login made of a waiting refund was shown unflagged"
    assert "follow-up" in shown["not_as_signed"]
    assert (shown["can_decide"], shown["can_reject"], shown["cannot_decide_code"]) == (False, False, "request_unproven")
    assert refused("invalid") > counted  # told, not silent

    for decision in ("approve", "reject"):  # it happened / it did not: each moves the call's reservation in the policy
        answer = await http.post(f"{url}/{decision}", json={"action_digest": record.action_digest}, headers=bearer(bob))
        assert answer.status_code == 409, f"{decision}: the approver's finding on a call that never ran was taken: {answer.text}"
        assert answer.json()["detail"]["code"] == "request_unproven"
    assert await h.all_published()
    assert await resolutions(h, d.action_id) == [], "a signed finding on a call that never ran reached the bus"


async def test_a_follow_up_keeps_the_executors_unknown_outcome_and_a_rewrite_of_it_is_refused(
    start_approval: StartApproval, http: httpx.AsyncClient, approval_login: asyncpg.Connection, wait_for: WaitFor
) -> None:
    h = await start_approval()
    bob = await h.token("bob@acme.example", ["finance"])

    genuine, rewritten, stripped = [await unknown(h, wait_for) for _ in range(3)]
    assert genuine.decision is not None
    assert json.loads(genuine.decision)["type"] == "tidegate.action.unknown"
    await rewrite(approval_login, rewritten.approval_id, result_error={"type": "timeout", "message": "refund went through: confirm it"})
    await rewrite(approval_login, stripped.approval_id, decision=None)
    for changed, why in ((rewritten, "result_error not as the executor signed"), (stripped, "no signed unknown outcome")):
        url = f"{h.url}/api/v1/approvals/{changed.approval_id}"
        shown = (await http.get(url, headers=bearer(bob))).json()
        assert why in (shown["not_as_signed"] or ""), shown
        assert shown["result_error"]["message"] == "payments did not answer within 10 s"  # the executor's words, never the login's
        answer = await http.post(f"{url}/approve", json={"action_digest": changed.action_digest}, headers=bearer(bob))
        assert answer.status_code == 409, answer.text
    not_done = {"action_digest": stripped.action_digest}
    refusal = (await http.post(f"{h.url}/api/v1/approvals/{stripped.approval_id}/reject", json=not_done, headers=bearer(bob))).json()
    assert "tidegate approvals adopt" in refusal["detail"]["message"]

    url = f"{h.url}/api/v1/approvals/{genuine.approval_id}"
    assert (await http.get(url, headers=bearer(bob))).json()["not_as_signed"] is None
    done = await http.post(f"{url}/approve", json={"comment": "in the ledger", "action_digest": genuine.action_digest}, headers=bearer(bob))
    assert (done.json()["status"], done.json()["resolution"]) == ("resolved", "confirmed_done")
    assert await wait_for(lambda: resolutions(h, genuine.action_id), what="the signed resolution") == ["confirmed_done"]


async def test_adopt_keeps_the_executors_unknown_outcome_in_a_follow_up_from_before_and_none_in_a_made_up_one(
    start_approval: StartApproval, http: httpx.AsyncClient, approval_login: asyncpg.Connection, kit: KitSettings, wait_for: WaitFor
) -> None:
    """The operator's way through the upgrade: a follow-up opened before this release keeps no event, and resolving it is refused
    until `tidegate approvals adopt` copies its `action.unknown` from the audit log; a follow-up the login made has none there."""
    h = await start_approval()
    bob = await h.token("bob@acme.example", ["finance"])
    audit = build_audit(kit, AuditSettings(batch_max_records=500, checkpoint_interval_s=0.5, topic_discovery_ms=2000))
    await audit.start()
    log = await PostgresAuditLog.connect(kit.database_url, max_size=2)
    try:
        before = await unknown(h, wait_for)
        await h.escalate(d := h.decided(args=REFUND))
        made_up = await h.request_for(d.action_id, wait_for)
        found = SearchFilters(event_type="tidegate.action.unknown", action_id=before.action_id, topic_prefix=kit.topic_prefix)
        await wait_for(lambda: log.search(found, limit=1), what="the unknown outcome in the audit log", timeout=60)
        await rewrite(approval_login, before.approval_id, decision=None)  # as release 24 left it
        await rewrite(approval_login, made_up.approval_id, "follow_up", decision=None, reasons=before.model_dump(mode="json")["reasons"])
        outcomes = {o.approval_id: o for o in await adopt_pending(kit, log)}
    finally:
        await log.close()
        await audit.stop()
    assert outcomes[before.approval_id].outcome == "adopted", outcomes[before.approval_id]
    assert outcomes[made_up.approval_id].outcome == "not_found", outcomes[made_up.approval_id]
    assert "no action.unknown of this action" in (outcomes[made_up.approval_id].why or "")
    for record, status in ((made_up, 409), (before, 200)):
        url = f"{h.url}/api/v1/approvals/{record.approval_id}/approve"
        answer = await http.post(url, json={"action_digest": record.action_digest}, headers=bearer(bob))
        assert answer.status_code == status, answer.text
