"""On the real broker and database: bob corrects a refund, carol approves from chat, and bob's correction is what runs.

The approver6 A2 scenario end to end: quorum 2; bob approves with edited args (899 → 450, `wrong_amount`) over the API;
the chat endpoint is told (`approval.edited`, signed per Standard Webhooks); carol's chat approval of the original call is
refused `edit_pending` instead of silently restarting the count; her approval of the edit grants it; the signed grant
carries 450 and both approvers' comments and reasons; the report counts bob's reason.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from approval_harness import REFUND_ARGS, Receiver, StartApproval

from services.approval import webhooks

GROUPS = """
default:
  risk_groups: {financial: [finance]}
  required_approvals: {financial: 2}
"""
BOB, CAROL = "bob@acme.example", "carol@acme.example"
HALF = {**REFUND_ARGS, "amount_usd": 450.0}


async def test_a_chat_approval_never_discards_a_co_approvers_edit_and_the_edit_is_what_is_granted(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: Any, tmp_path: Path
) -> None:
    async with Receiver.listening(failures=0) as chat:
        secret = webhooks.new_secret()
        groups = tmp_path / "groups.yaml"
        groups.write_text(GROUPS)
        tenant = f"acme-{uuid.uuid4().hex[:8]}"
        endpoints = tmp_path / "webhooks.yaml"
        endpoint = {"endpoint_id": "chat", "url": chat.url, "secret": secret, "tenant_id": tenant, "approvers": [CAROL]}
        endpoints.write_text(json.dumps({"endpoints": [endpoint]}))  # YAML reads JSON
        h = await start_approval(groups_file=groups, webhooks_file=endpoints, webhook_backoff_initial_s=0.2)
        h.tenant = tenant
        bob = await h.token(BOB, ["finance"])
        await h.token(CAROL, ["finance"])
        await h.escalate(d := h.decided())
        record = await h.request_for(d.action_id, wait_for)
        assert record.required_approvals == 2

        edit = {"action_digest": record.action_digest, "edited_args": HALF, "review_reason": "wrong_amount", "comment": "only half bent"}
        first = await http.post(
            f"{h.url}/api/v1/approvals/{record.approval_id}/approve", json=edit, headers={"Authorization": f"Bearer {bob}"}
        )
        assert first.status_code == 200, first.text
        assert (first.json()["status"], first.json()["approvers"]) == ("pending", [BOB])

        def edited() -> dict[str, Any] | None:
            for headers, body in chat.got:
                message = json.loads(body)
                if message["type"] == "approval.edited":
                    webhooks.verify(secret, headers, body, now=time.time(), tolerance_s=300)
                    return dict(message["data"])
            return None

        told = await wait_for(edited, what="approval.edited sent to the chat")
        assert (told["pending_edit"]["by"], told["pending_edit"]["edited_args"]) == (BOB, HALF)
        assert told["pending_edit"]["review_reason"] == "wrong_amount"

        async def callback(msg_id: str, **data: Any) -> httpx.Response:
            said = {"approval_id": record.approval_id, "approver": CAROL, "action_digest": record.action_digest}
            body = json.dumps({"type": "approval.decision", "data": said | data}).encode()
            headers = webhooks.signed_headers(secret, msg_id, int(time.time()), body)
            return await http.post(f"{h.url}/api/v1/callbacks/{h.tenant}/chat", content=body, headers=headers)

        wipe = await callback("msg_carol_1", decision="approve", comment="ok from chat (message said 899)")
        assert (wipe.status_code, wipe.json()["detail"]["code"]) == (409, "edit_pending"), wipe.text
        assert BOB in wipe.json()["detail"]["message"]
        bob_sees = await http.get(f"{h.url}/api/v1/approvals/{record.approval_id}", headers={"Authorization": f"Bearer {bob}"})
        assert (bob_sees.json()["approvers"], bob_sees.json()["edited_args"]) == ([BOB], HALF)  # nothing was discarded

        agreed = await callback("msg_carol_2", decision="approve", edited_args=HALF, comment="ok at 450")
        assert agreed.status_code == 200, agreed.text
        assert (agreed.json()["status"], agreed.json()["approvers"]) == ("granted", [BOB, CAROL])

        async def granted() -> Any:
            found = [e for e in await h.approvals() if e.data.approval_id == record.approval_id and e.type == "tidegate.approval.granted"]
            return found[0] if found else None

        event = await wait_for(granted, what="approval.granted on the bus")
        assert event.data.edited_args == HALF
        assert event.data.review_reason == "wrong_amount"
        assert [(v.approver, v.comment, v.review_reason) for v in event.data.votes] == [
            (BOB, "only half bent", "wrong_amount"),
            (CAROL, "ok at 450", None),
        ]
        report = await http.get(f"{h.url}/api/v1/report", params={"since_days": 1}, headers={"Authorization": f"Bearer {bob}"})
        assert report.status_code == 200, report.text
        assert report.json()["reasons"]["reason"]["all"] == {"wrong_amount": 1}
        (example,) = report.json()["examples"]["wrong_amount"]
        assert (example["approver"], example["comment"]) == (BOB, "only half bent")
