"""The approval service on the real bus and database: requests, signed decisions, races, expiry, digests."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from approval_harness import REFUND_ARGS, ApprovalHarness, StartApproval

from schemas import ActionResultData, ActionUnknown, ErrorInfo
from servicekit import Keyring, approval_document


def verified(h: ApprovalHarness, event: Any) -> bool:
    """What the policy service checks: the approval key's signature over `approval_document` (the whole data as sent)."""
    ring = Keyring.load(h.kit.keys_dir, "approval")
    return bool(
        event.data.key_id
        and event.data.signature
        and ring.verify(event.data.key_id, approval_document(event.type, event.data), event.data.signature)
    )


async def of_type(h: ApprovalHarness, approval_id: str, type_: str) -> list[Any]:
    return [e for e in await h.approvals() if e.type == type_ and e.data.approval_id == approval_id]


async def finance_request(h: ApprovalHarness, wait_for: Any) -> tuple[Any, Any, str, dict[str, str]]:
    """An escalated refund's open request, the URL that approves it and the headers of bob (finance): (decided, record, url, headers)."""
    bob = await h.token("bob@acme.example", ["finance"])
    decided = h.decided()
    await h.escalate(decided)
    record = await h.request_for(decided.action_id, wait_for)
    return decided, record, f"{h.url}/api/v1/approvals/{record.approval_id}/approve", {"Authorization": f"Bearer {bob}"}


async def test_escalation_is_requested_once_and_the_grant_is_signed(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: Any
) -> None:
    h = await start_approval()
    bob = await h.token("bob@acme.example", ["finance"])
    decided = h.decided()
    await h.escalate(decided)
    await h.escalate(decided)  # redelivery
    await h.escalate(h.decided(action_id=decided.action_id, task_id=decided.task_id, via="approval", approval_id="ap-x"))
    record = await h.request_for(decided.action_id, wait_for)
    requested = await wait_for(lambda: of_type(h, record.approval_id, "tidegate.approval.requested"), what="approval.requested")
    assert requested[0].data.action_digest == decided.action_digest
    assert requested[0].data.signature is None
    await h.proc.bus.wait_caught_up("actions.decided")
    assert len(await h.repo.search(tenant_id=h.tenant, status=None)) == 1

    response = await http.post(
        f"{h.url}/api/v1/approvals/{record.approval_id}/approve",
        json={"action_digest": record.action_digest, "comment": "customer is known"},
        headers={"Authorization": f"Bearer {bob}"},
    )
    assert response.status_code == 200, response.text
    (granted,) = await wait_for(lambda: of_type(h, record.approval_id, "tidegate.approval.granted"), what="approval.granted")
    assert verified(h, granted)
    assert (granted.data.approver, granted.data.approvers, granted.data.comment) == (
        "bob@acme.example",
        ["bob@acme.example"],
        "customer is known",
    )
    assert granted.data.args == REFUND_ARGS
    assert granted.data.action_digest == decided.action_digest
    assert granted.subject == decided.task_id


async def test_two_approvers_clicking_at_the_same_moment_make_one_decision(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: Any
) -> None:
    h = await start_approval()
    bob, carol = await h.token("bob@acme.example", ["finance"]), await h.token("carol@acme.example", ["finance"])
    rounds = [h.decided() for _ in range(4)]
    for decided in rounds:
        await h.escalate(decided)
    for decided in rounds:
        record = await h.request_for(decided.action_id, wait_for)
        url = f"{h.url}/api/v1/approvals/{record.approval_id}/approve"
        body = {"action_digest": record.action_digest}
        answers = await asyncio.gather(*(http.post(url, json=body, headers={"Authorization": f"Bearer {t}"}) for t in (bob, carol)))
        assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
        loser = next(a for a in answers if a.status_code == 409)
        assert loser.json()["detail"]["code"] == "not_pending"
        stored = await h.repo.get(record.approval_id)
        assert stored is not None
        assert stored.status == "granted"
        assert len(stored.approvers) == 1
    await wait_for(h.all_published, what="outbox drained")
    events = await h.approvals()
    for decided in rounds:
        grants = [e for e in events if e.type == "tidegate.approval.granted" and e.data.action_id == decided.action_id]
        assert len(grants) == 1


async def test_n_of_m_needs_two_distinct_approvers_even_when_they_click_together(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: Any
) -> None:
    h = await start_approval()
    dan, erin = await h.token("dan@acme.example", ["security"]), await h.token("erin@acme.example", ["security"])
    sequential, together = (h.decided(tool="delete_customer_data", args={"customer_id": f"c{i}"}, risk="destructive") for i in range(2))
    await h.escalate(sequential)
    await h.escalate(together)
    record = await h.request_for(sequential.action_id, wait_for)
    assert record.required_approvals == 2
    url = f"{h.url}/api/v1/approvals/{record.approval_id}/approve"
    body = {"action_digest": record.action_digest}
    first = await http.post(url, json=body, headers={"Authorization": f"Bearer {dan}"})
    assert (first.status_code, first.json()["status"], first.json()["approvers"]) == (200, "pending", ["dan@acme.example"])
    twice = await http.post(url, json=body, headers={"Authorization": f"Bearer {dan}"})
    assert (twice.status_code, twice.json()["detail"]["code"]) == (409, "already_approved")
    assert await of_type(h, record.approval_id, "tidegate.approval.granted") == []
    second = await http.post(url, json=body, headers={"Authorization": f"Bearer {erin}"})
    assert second.json()["status"] == "granted"
    (granted,) = await wait_for(lambda: of_type(h, record.approval_id, "tidegate.approval.granted"), what="grant")
    assert sorted(granted.data.approvers) == ["dan@acme.example", "erin@acme.example"]
    assert verified(h, granted)

    record = await h.request_for(together.action_id, wait_for)
    url = f"{h.url}/api/v1/approvals/{record.approval_id}/approve"
    answers = await asyncio.gather(
        *(
            http.post(url, json=body | {"action_digest": record.action_digest}, headers={"Authorization": f"Bearer {t}"})
            for t in (dan, erin)
        )
    )
    assert [a.status_code for a in answers] == [200, 200]
    (granted,) = await wait_for(lambda: of_type(h, record.approval_id, "tidegate.approval.granted"), what="grant of the concurrent pair")
    assert sorted(granted.data.approvers) == ["dan@acme.example", "erin@acme.example"]


async def test_a_grant_for_a_changed_call_is_refused(start_approval: StartApproval, http: httpx.AsyncClient, wait_for: Any) -> None:
    h = await start_approval()
    bob = await h.token("bob@acme.example", ["finance"])
    original = h.decided()
    await h.escalate(original)
    seen = await h.request_for(original.action_id, wait_for)
    changed_args = REFUND_ARGS | {"amount_usd": 5000.0}
    reproposed = h.decided(action_id=original.action_id, task_id=original.task_id, args=changed_args)
    await h.escalate(reproposed)

    async def refreshed() -> Any:
        record = await h.repo.get(seen.approval_id)
        return record if record and record.action_digest == reproposed.action_digest else None

    await wait_for(refreshed, what="the request to carry the re-proposed call")
    url = f"{h.url}/api/v1/approvals/{seen.approval_id}/approve"
    stale = await http.post(url, json={"action_digest": seen.action_digest}, headers={"Authorization": f"Bearer {bob}"})
    assert (stale.status_code, stale.json()["detail"]["code"]) == (409, "digest_mismatch")
    assert await of_type(h, seen.approval_id, "tidegate.approval.granted") == []
    current = await http.post(url, json={"action_digest": reproposed.action_digest}, headers={"Authorization": f"Bearer {bob}"})
    assert current.status_code == 200
    (granted,) = await wait_for(lambda: of_type(h, seen.approval_id, "tidegate.approval.granted"), what="grant")
    assert (granted.data.args, granted.data.action_digest) == (changed_args, reproposed.action_digest)


async def test_an_edited_call_is_granted_with_the_original_digest(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: Any
) -> None:
    h = await start_approval()
    decided, record, url, headers = await finance_request(h, wait_for)
    invalid = await http.post(url, json={"action_digest": record.action_digest, "edited_args": {"amount_usd": "lots"}}, headers=headers)
    assert invalid.status_code == 422
    edited = REFUND_ARGS | {"amount_usd": 450.0}
    response = await http.post(url, json={"action_digest": record.action_digest, "edited_args": edited, "comment": "half"}, headers=headers)
    assert response.status_code == 200
    (granted,) = await wait_for(lambda: of_type(h, record.approval_id, "tidegate.approval.granted"), what="grant")
    assert (granted.data.args, granted.data.edited_args, granted.data.action_digest) == (REFUND_ARGS, edited, decided.action_digest)
    assert verified(h, granted)


async def test_an_undecided_request_expires_signed_and_fails_closed(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: Any
) -> None:
    h = await start_approval(expiry_s=1.0)
    bob = await h.token("bob@acme.example", ["finance"])
    decided = h.decided()
    await h.escalate(decided)
    record = await h.request_for(decided.action_id, wait_for)
    (expired,) = await wait_for(lambda: of_type(h, record.approval_id, "tidegate.approval.expired"), what="approval.expired")
    assert verified(h, expired)
    assert expired.data.approver is None
    late = await http.post(
        f"{h.url}/api/v1/approvals/{record.approval_id}/approve",
        json={"action_digest": record.action_digest},
        headers={"Authorization": f"Bearer {bob}"},
    )
    assert (late.status_code, late.json()["detail"]["code"]) == (409, "not_pending")
    assert await of_type(h, record.approval_id, "tidegate.approval.granted") == []


async def test_forged_token_and_self_approval_over_http(start_approval: StartApproval, http: httpx.AsyncClient, wait_for: Any) -> None:
    h = await start_approval()
    alice = await h.token("alice@acme.example", ["finance"])
    decided = h.decided()
    await h.escalate(decided)
    record = await h.request_for(decided.action_id, wait_for)
    url = f"{h.url}/api/v1/approvals/{record.approval_id}/approve"
    body = {"action_digest": record.action_digest}
    forged = await http.post(url, json=body, headers={"Authorization": "Bearer tga_forged0000000000000000000000000000000000"})
    assert forged.status_code == 401
    assert forged.headers["www-authenticate"] == "Bearer"
    mine = await http.post(url, json=body, headers={"Authorization": f"Bearer {alice}"})
    assert (mine.status_code, mine.json()["detail"]["code"]) == (403, "four_eyes")
    stored = await h.repo.get(record.approval_id)
    assert stored is not None
    assert stored.status == "pending"
    tokens = await h.proc.pool.fetch("SELECT token_sha256 FROM approval.approver_tokens WHERE approver = 'alice@acme.example'")  # type: ignore[union-attr]
    assert alice not in {t["token_sha256"] for t in tokens}


async def test_an_unknown_outcome_waits_for_a_human_follow_up(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: Any
) -> None:
    h = await start_approval()
    bob = await h.token("bob@acme.example", ["finance"])
    decided = h.decided()
    await h.escalate(decided)
    await h.request_for(decided.action_id, wait_for)
    result = ActionResultData(
        action_id=decided.action_id,
        task_id=decided.task_id,
        tenant_id=h.tenant,
        tool="issue_refund",
        status="unknown",
        error=ErrorInfo(type="timeout", message="payments did not answer within 10 s"),
        attempts=1,
        duration_ms=10_000,
    )
    await h.publish("actions.results", ActionUnknown.build(result, source="tidegate/executor"))
    follow_up = await wait_for(lambda: h.repo.get_by_action(decided.action_id, "follow_up", tenant_id=h.tenant), what="follow-up")
    listed = await http.get(f"{h.url}/api/v1/approvals", params={"reason": "outcome_unknown"}, headers={"Authorization": f"Bearer {bob}"})
    assert [r["approval_id"] for r in listed.json()] == [follow_up.approval_id]
    assert listed.json()[0]["result_error"]["type"] == "timeout"
    done = await http.post(
        f"{h.url}/api/v1/approvals/{follow_up.approval_id}/approve",
        json={"comment": "refund is in the ledger", "action_digest": follow_up.action_digest},
        headers={"Authorization": f"Bearer {bob}"},
    )
    assert (done.json()["status"], done.json()["resolution"]) == ("resolved", "confirmed_done")

    async def finding() -> list[Any] | None:
        found = [e for e in await h.approvals() if e.data.action_id == decided.action_id and e.type != "tidegate.approval.requested"]
        return found or None

    [resolved] = await wait_for(finding, what="the signed resolution on `approvals`")
    assert resolved.type == "tidegate.approval.resolved"
    assert (resolved.data.resolution, resolved.data.approver, resolved.data.approval_id) == (
        "confirmed_done",
        "bob@acme.example",
        follow_up.approval_id,
    )
    assert resolved.data.signature


async def test_a_waiting_request_escalates_to_the_second_group(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: Any
) -> None:
    h = await start_approval(escalate_after_s=0.5)
    lead = await h.token("lee@acme.example", ["finance-leads"])
    decided = h.decided()
    await h.escalate(decided)
    record = await h.request_for(decided.action_id, wait_for)
    assert record.escalated_at is None

    async def escalated() -> Any:
        current = await h.repo.get(record.approval_id)
        return current if current and current.escalated_at else None

    await wait_for(escalated, what="the sweeper to escalate")
    answer = await http.post(
        f"{h.url}/api/v1/approvals/{record.approval_id}/approve",
        json={"action_digest": record.action_digest},
        headers={"Authorization": f"Bearer {lead}"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["escalated"] is True


async def test_a_comment_no_database_can_keep_is_refused_with_a_reason_and_the_request_stays_open(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: Any
) -> None:
    """A U+0000 in an approver's comment (JSON's `\\u0000`) was a 500 from PostgreSQL; now a 422 that says why."""
    h = await start_approval()
    _, record, url, headers = await finance_request(h, wait_for)
    refused = await http.post(url, json={"action_digest": record.action_digest, "comment": "known\u0000customer"}, headers=headers)
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"]["code"] == "invalid_body"
    assert "U+0000" in refused.json()["detail"]["message"]
    assert (await h.repo.get(record.approval_id)).status == "pending"
    granted = await http.post(url, json={"action_digest": record.action_digest, "comment": "known customer"}, headers=headers)
    assert granted.status_code == 200, granted.text
