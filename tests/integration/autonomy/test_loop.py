"""The earn-trust loop on the real stack: low confidence and repeated tool errors escalate; a human rejects with a reason that
the audit log and the report show; the autonomy report proposes a wider threshold and its what-if shows the saved touches.

Policy, approval (HTTP), executor and audit run as in production on real Kafka and PostgreSQL; the approver decides
through the HTTP API; the reports read the recorded topics and the audit log as the CLI does.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from autonomy_helpers import propose
from bus_helpers import Collector, Producer

import schemas as s
from servicekit import ADMIN, KitSettings, create_pool
from services.approval import auth, review_report, reviews_from_events
from services.approval.app import build as build_approval
from services.approval.settings import ApprovalSettings
from services.audit import PostgresAuditLog, SearchFilters
from services.audit.app import build as build_audit
from services.executor.app import build as build_executor
from services.policy.app import build as build_policy
from systems.seed import seed_demo
from tidegate.ops.autonomy import autonomy_report, human_outcomes
from tidegate.ops.recorded import recorded_window
from tidegate.ops.whatif import evaluate, load_pack

WATCHED = ["actions.decided", "actions.results", "approvals"]
SETTINGS = {"allow_autonomous": True, "internal_domains": ["loop.example"], "min_confidence": 0.9}


@dataclass
class Stack:
    kit: KitSettings
    tenant: str
    producer: Producer
    collector: Collector
    services: list[Any]
    http: httpx.AsyncClient
    token: str

    @property
    def policy(self) -> Any:
        return self.services[0].policy

    async def propose(self, tool: str, args: dict[str, Any], *, task_id: str, confidence: float | None = None) -> str:
        return await propose(
            self.producer, self.tenant, tool, args, task_id=task_id, requested_by="agent@loop.example", confidence=confidence
        )

    async def decision(self, wait_for: Any, action_id: str) -> s.ActionDecidedData:
        found = await wait_for(lambda: self.collector.decided(action_id), timeout=30, what=f"the decision on {action_id}")
        return found[0].data  # type: ignore[no-any-return]

    async def decide(self, wait_for: Any, action_id: str, verb: str, **body: Any) -> dict[str, Any]:
        """Approve or reject the request of `action_id` through the HTTP API, as the approver."""
        url, headers = self.services[1].http_url, {"Authorization": f"Bearer {self.token}"}

        async def pending() -> dict[str, Any] | None:
            listed = (await self.http.get(f"{url}/api/v1/approvals", headers=headers)).json()
            return next((a for a in listed if a["action_id"] == action_id), None)

        request = await wait_for(pending, timeout=30, what=f"the approval request of {action_id}")
        answer = await self.http.post(
            f"{url}/api/v1/approvals/{request['approval_id']}/{verb}",
            json={"action_digest": request["action_digest"], **body},
            headers=headers,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]


@pytest.fixture
async def stack(kit: KitSettings) -> AsyncIterator[Stack]:
    tenant = f"loop-{uuid.uuid4().hex[:8]}"
    pool: asyncpg.Pool = await create_pool(kit.database_url, max_size=2)
    await seed_demo(pool, [tenant])
    await pool.close()
    producer = Producer(kit)
    await producer.start()
    onboard = s.ControlTenant.build(s.ControlTenantData(tenant_id=tenant, settings=SETTINGS, set_by="admin@loop.example"), source="cli")
    await producer.send("control", onboard)
    services: list[Any] = [
        build_policy(kit),
        build_approval(kit, ApprovalSettings(http_port=0, sweep_interval_s=0.2)),
        build_executor(kit),
        build_audit(kit),
    ]
    for svc in services:
        await svc.start()
    token = auth.new_token()
    await services[1].approval.repo.add_token(auth.hash_token(token), "bob@loop.example", tenant, ["support"])
    collector = Collector(kit, WATCHED)
    await collector.start()
    async with httpx.AsyncClient(timeout=10) as http:
        try:
            yield Stack(kit, tenant, producer, collector, services, http, token)
        finally:
            await collector.stop()
            for svc in reversed(services):
                await svc.stop()
            await producer.stop()


TAG = {"ticket_id": "T-1001", "tags": ["refund"]}


async def test_repeated_tool_errors_escalate_the_tasks_further_writes(stack: Stack, wait_for: Any) -> None:
    task = f"t-errors-{uuid.uuid4().hex[:6]}"
    for _ in range(2):  # a ticket that does not exist: the helpdesk refuses, the call fails
        failing = await stack.propose("tag_ticket", {"ticket_id": "T-9999", "tags": ["x"]}, task_id=task, confidence=1.0)
        assert (await stack.decision(wait_for, failing)).outcome == "allow"
        await wait_for(lambda a=failing: [e for e in stack.collector.events["actions.results"] if e.data.action_id == a], what="failure")
    await wait_for(lambda: stack.policy.repo.task_troubles(stack.tenant, task), what="the policy service seeing both failures")
    then = await stack.decision(wait_for, await stack.propose("tag_ticket", TAG, task_id=task, confidence=1.0))
    elsewhere = await stack.decision(wait_for, await stack.propose("tag_ticket", TAG, task_id=f"{task}-other", confidence=1.0))
    assert (then.outcome, [r.code.value for r in then.reasons], then.facts["flow"]["tool_errors"]) == (
        "escalate",
        ["repeated_tool_errors"],
        2,
    )
    assert elsewhere.outcome == "allow"  # another task is not held to this one's errors


async def test_low_confidence_escalates_a_rejection_reason_is_recorded_and_the_report_widens_the_threshold(
    stack: Stack, wait_for: Any
) -> None:
    started = s.utcnow()
    answers = {0.8: "approve", 0.75: "approve", 0.7: "approve", 0.5: "reject"}
    actions = {}
    for confidence, verb in answers.items():
        action = await stack.propose("tag_ticket", TAG, task_id=f"t-conf-{uuid.uuid4().hex[:6]}", confidence=confidence)
        decided = await stack.decision(wait_for, action)
        assert (decided.outcome, [r.code.value for r in decided.reasons]) == ("escalate", ["low_confidence"])
        body = {"review_reason": "missing_context", "comment": "guessing"} if verb == "reject" else {}
        assert (await stack.decide(wait_for, action, verb, **body))["status"] == ("granted" if verb == "approve" else "rejected")
        actions[confidence] = action
    sure = await stack.decision(wait_for, await stack.propose("tag_ticket", TAG, task_id="t-sure", confidence=0.95))
    assert sure.outcome == "allow"

    # The audit log holds the signed reason, and the report counts it.
    log = await PostgresAuditLog.connect(stack.kit.database_url, max_size=2)
    try:
        rows = await wait_for(
            lambda: log.search(
                SearchFilters(action_id=actions[0.5], event_type="tidegate.approval.rejected", topic_prefix=stack.kit.topic_prefix)
            ),
            what="the rejection in the audit log",
        )
    finally:
        await log.close()
    assert s.decode("approvals", rows[0].value).data.review_reason == "missing_context"
    window = await recorded_window(
        stack.kit,
        started,
        None,
        topics=("tasks", "actions.proposed", "actions.decided", "approvals"),
        tenant=stack.tenant,
        principal=ADMIN,
    )
    events = [r.event for r in window.events]
    reviews = review_report(reviews_from_events(events))
    assert reviews["reasons"]["tool"]["tag_ticket"] == {"missing_context": 1}
    assert reviews["examples"]["missing_context"][0]["explain"].startswith("tidegate audit explain t-conf-")

    # The autonomy report proposes the widest threshold the rejected call stays under; what-if replays it on the window.
    pack = load_pack(stack.kit.policy_dir, stack.kit.tools_dir)
    live = pack.settings.with_record(SETTINGS)
    report = autonomy_report(events, lambda tenant: live, pack)
    assert report.candidate_settings() == {stack.tenant: {"min_confidence": 0.51}}
    [candidate] = report.candidates
    assert (candidate.would_allow, candidate.kept_for_humans) == (3, 1)
    widened = {stack.tenant: pack.settings.with_record(SETTINGS | report.candidate_settings()[stack.tenant])}
    proposed = [e.data for e in events if isinstance(e, s.ActionProposed)]
    decisions = [e.data for e in events if isinstance(e, s.ActionDecided)]
    replay = evaluate(pack, proposed, decisions, tenants=widened, humans=human_outcomes(events))
    assert (replay.touches_saved, replay.newly_allowed_rejected) == (3, [])
