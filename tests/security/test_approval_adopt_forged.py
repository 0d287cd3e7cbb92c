"""`tidegate approvals adopt` gives a pending request only the policy's own escalation of it, never one an attacker chose.

Requests opened before release 23 keep no signed decision; the operator's `approvals adopt` copies each one's
`action.decided` from the audit log into the row. The attacker holds the approval service's database login (and, for
the tampered record, a login that writes `actions.decided`). Each attempt leaves its row without a decision and the
request unapprovable, while a genuine request pending across the upgrade is adopted and approved in the same run: a
decision of another task's action, a policy-signed escalation of another tenant, a record whose bytes were changed (with
the row rewritten to match it), and a row rewritten before the upgrade whose true decision is in the log.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from approval_harness import ApprovalHarness, StartApproval, bearer

from servicekit import KitSettings, action_digest
from services.audit import PostgresAuditLog, SearchFilters
from services.audit.app import build as build_audit
from services.audit.settings import AuditSettings
from tidegate.commands._approvals_adopt import adopt_pending

pytestmark = pytest.mark.integration

WaitFor = Callable[..., Awaitable[Any]]
HARMLESS = {"payee_is_new": False, "amount_usd": 9.0}


async def as_before_23(login: asyncpg.Connection, approval_id: str, change: Callable[[dict[str, Any]], None] | None = None) -> None:
    """The row as release 22 left it (no kept decision), changed as the attacker likes."""
    row = json.loads(await login.fetchval("SELECT record FROM approval.approvals WHERE approval_id = $1", approval_id))
    row.pop("decision", None)
    if change is not None:
        change(row)
    await login.execute(
        "UPDATE approval.approvals SET record = $2::jsonb, tenant_id = $3, task_id = $4 WHERE approval_id = $1",
        approval_id,
        json.dumps(row),
        row["tenant_id"],
        row["task_id"],
    )


async def decision_of(login: asyncpg.Connection, approval_id: str) -> Any:
    return await login.fetchval("SELECT record->'decision' FROM approval.approvals WHERE approval_id = $1", approval_id)


async def test_adopt_keeps_only_the_policys_own_escalation_of_each_request(
    start_approval: StartApproval,
    http: httpx.AsyncClient,
    approval_login: asyncpg.Connection,
    producer: AIOKafkaProducer,
    kit: KitSettings,
    wait_for: WaitFor,
) -> None:
    h: ApprovalHarness = await start_approval()
    audit = build_audit(kit, AuditSettings(batch_max_records=500, checkpoint_interval_s=0.5, topic_discovery_ms=2000))
    await audit.start()
    log = await PostgresAuditLog.connect(kit.database_url, max_size=2)
    try:
        bob = await h.token("bob@acme.example", ["finance"])
        made = {name: h.decided() for name in ("genuine", "other_task", "rewritten", "tampered")}
        made["other_tenant"] = h.decided(tenant_id="globex", action_digest=action_digest("globex", "issue_refund", h.decided().args))
        for d in made.values():
            await h.escalate(d)
        rows = {name: await wait_for(lambda d=d: h.repo.get_by_action(d.action_id, tenant_id=d.tenant_id)) for name, d in made.items()}

        async def logged(action_id: str, count: int = 1) -> list[Any]:
            found = SearchFilters(event_type="tidegate.action.decided", action_id=action_id, topic_prefix=kit.topic_prefix)
            got = await log.search(found, limit=10)
            return got if len(got) >= count else []

        for d in made.values():
            await wait_for(lambda d=d: logged(d.action_id), what="the escalation in the audit log", timeout=60)

        # The attacker's rows, as they would stand at the upgrade.
        await as_before_23(approval_login, rows["genuine"].approval_id)
        await as_before_23(approval_login, rows["other_task"].approval_id, lambda r: r.update(task_id="t-not-its-task"))

        def to_acme(r: dict[str, Any]) -> None:  # globex's escalation shown to acme's approvers
            r.update(tenant_id=h.tenant, action_digest=action_digest(h.tenant, r["tool"], r["args"]))

        await as_before_23(approval_login, rows["other_tenant"].approval_id, to_acme)
        await as_before_23(approval_login, rows["rewritten"].approval_id, lambda r: r.update(facts=HARMLESS))
        # the tampered record: the policy's bytes with the facts the row now says, published with a stolen login
        (true,) = await logged(made["tampered"].action_id)
        forged = true.value.replace(b'"amount_usd":900.0', b'"amount_usd":9.0')
        assert forged != true.value
        await producer.send_and_wait(kit.topic_prefix + "actions.decided", forged, key=true.key, partition=true.partition)
        await wait_for(lambda: logged(made["tampered"].action_id, 2), what="the tampered record in the audit log", timeout=60)
        await as_before_23(approval_login, rows["tampered"].approval_id, lambda r: r["facts"].update(amount_usd=9.0))

        outcomes = {o.approval_id: o for o in await adopt_pending(kit, log)}
        said = {name: outcomes[r.approval_id] for name, r in rows.items()}
    finally:
        await log.close()
        await audit.stop()

    assert said["genuine"].outcome == "adopted", said["genuine"]
    assert await decision_of(approval_login, rows["genuine"].approval_id) is not None
    for name in ("other_task", "other_tenant", "rewritten", "tampered"):
        assert said[name].outcome == "refused", (name, said[name])
        assert await decision_of(approval_login, rows[name].approval_id) is None, f"{name}: a decision was kept in the attacker's row"
    assert "of another action" in (said["other_task"].why or "")
    assert "tenant globex" in (said["other_tenant"].why or "")
    assert "changed in the database (facts" in (said["rewritten"].why or "")
    assert "is refused" in (said["tampered"].why or "")
    assert "1 other record" in (said["tampered"].why or "")

    async def approve(record: Any) -> httpx.Response:
        url = f"{h.url}/api/v1/approvals/{record.approval_id}/approve"
        return await http.post(url, json={"action_digest": record.action_digest}, headers=bearer(bob))

    tampered = await approve(rows["tampered"])
    assert (tampered.status_code, tampered.json()["detail"]["code"]) == (409, "request_unproven"), tampered.text
    granted = await approve(rows["genuine"])
    assert (granted.status_code, granted.json()["status"]) == (200, "granted"), granted.text


async def test_a_pending_row_no_release_wrote_is_refused_and_the_others_are_adopted(
    start_approval: StartApproval, approval_login: asyncpg.Connection, kit: KitSettings, wait_for: WaitFor
) -> None:
    """review63: the attacker adds one pending row the service's record cannot read (a field of the wrong type).

    Before, `approvals adopt` ended on pydantic's traceback at that row, having adopted nothing: every request pending
    across the upgrade stayed unapprovable while the operator looked for why. Now that row is refused, said why, and
    the genuine request beside it is adopted.
    """
    h: ApprovalHarness = await start_approval()
    audit = build_audit(kit, AuditSettings(batch_max_records=500, checkpoint_interval_s=0.5, topic_discovery_ms=2000))
    await audit.start()
    log = await PostgresAuditLog.connect(kit.database_url, max_size=2)
    try:
        d = h.decided()
        await h.escalate(d)
        genuine = await wait_for(lambda: h.repo.get_by_action(d.action_id, tenant_id=d.tenant_id))
        found = SearchFilters(event_type="tidegate.action.decided", action_id=d.action_id, topic_prefix=kit.topic_prefix)
        await wait_for(lambda: log.search(found, limit=1), what="the escalation in the audit log", timeout=60)
        await as_before_23(approval_login, genuine.approval_id)
        stored = "SELECT record FROM approval.approvals WHERE approval_id = $1"
        junk = json.loads(await approval_login.fetchval(stored, genuine.approval_id))
        junk.update(approval_id=f"ap-junk-{genuine.approval_id}", action_id=f"a-junk-{d.action_id}", required_approvals="many")
        await approval_login.execute(
            "INSERT INTO approval.approvals SELECT $3, kind, $4, task_id, tenant_id, tool, status, 1, created_at, expires_at, "
            "escalated_at, $2::jsonb FROM approval.approvals WHERE approval_id = $1",
            genuine.approval_id,
            json.dumps(junk),
            junk["approval_id"],
            junk["action_id"],
        )
        try:
            outcomes = {o.approval_id: o for o in await adopt_pending(kit, log)}
        finally:  # the session's database is shared: a row no release reads would break later tests' sweeps and lists
            await approval_login.execute("DELETE FROM approval.approvals WHERE approval_id = $1", junk["approval_id"])
    finally:
        await log.close()
        await audit.stop()
    refused = outcomes[f"ap-junk-{genuine.approval_id}"]
    assert refused.outcome == "refused", refused
    assert "not a request this release reads" in (refused.why or "")
    assert outcomes[genuine.approval_id].outcome == "adopted", outcomes[genuine.approval_id]
    assert await decision_of(approval_login, genuine.approval_id) is not None
