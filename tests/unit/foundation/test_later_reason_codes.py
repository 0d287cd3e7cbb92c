"""A decision whose reason code this release does not know is read, not refused (upgrade probe F2, F3, F4).

A new release's policy gives new reason codes (`automation_tag`, `daily_payout_bound`, …). Read as a closed list, the
first one made every consumer of an older release refuse the whole decision: an outside agent's client timed out
("the policy service may be slow or down"), the planner and the approval service dead-lettered the escalation in a
rolling upgrade (no request, a task waiting on a decision it had been given), and after a rollback the approval queue
answered 500 to every approver for one pending request carrying such a code. These tests act as this release's
consumers meeting the next release's policy: the decision's outcome is what they act on, its code is kept as text.
"""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from schemas import ActionDecided, ActionDecidedData, Reason, ReasonCode, action_digest, decode, encode
from tidegate.client import ClientSettings, Escalated, MemoryTransport, Tidegate
from tidegate.client.scripted import ScriptedTidegate

LATER = "a_later_release_code"
ARGS = {"ticket_id": "T-1007", "tags": ["auto_close"]}


def decided_on_the_wire(code: str) -> bytes:
    """An escalation as a policy of a later release publishes it: this release's model cannot build it, so its JSON is edited."""
    data = ActionDecidedData(
        action_id="a-1",
        task_id="t-1",
        tenant_id="acme",
        tool="tag_ticket",
        args=ARGS,
        action_digest=action_digest("acme", "tag_ticket", ARGS),
        outcome="escalate",
        reasons=[Reason(code=ReasonCode.NEEDS_HUMAN_APPROVAL, policy_id="automation-tag", message="a human adds it")],
        policy_version="sha256:abc",
        latency_ms=0.2,
    )
    raw = json.loads(encode(ActionDecided.build(data, source="tidegate/policy")))
    raw["data"]["reasons"][0]["code"] = code
    return json.dumps(raw).encode()


def test_every_consumer_decodes_a_later_code_as_its_text_and_a_known_one_as_the_code() -> None:
    event = decode("actions.decided", decided_on_the_wire(LATER))
    assert event.data.outcome == "escalate"
    assert event.data.reasons[0].code == LATER
    assert str(event.data.reasons[0].code) == LATER
    known = decode("actions.decided", decided_on_the_wire("needs_human_approval"))
    assert known.data.reasons[0].code is ReasonCode.NEEDS_HUMAN_APPROVAL


@pytest.mark.parametrize("code", ["Needs Approval", "x" * 65, "", "1_code", "code\n"])
def test_a_code_is_still_a_code_not_any_text(code: str) -> None:
    with pytest.raises(ValidationError):
        decode("actions.decided", decided_on_the_wire(code))


async def test_an_agent_not_yet_upgraded_is_told_its_call_escalated_not_that_the_policy_is_down() -> None:
    bus = MemoryTransport()
    stack = ScriptedTidegate(bus, lambda p: ("escalate", LATER))
    settings = ClientSettings(tenant="acme", principal="agent@acme.example", decision_timeout_s=5)
    async with stack, Tidegate(settings, transport=bus) as client:
        outcome = await client.propose("tag_ticket", ARGS, action_id="a-later")
    assert isinstance(outcome, Escalated), outcome
    assert [str(r.code) for r in outcome.reasons] == [LATER]
