"""What the approver reads when an argument's source was not seen by the policy (leftovers22 #5).

A proposal after an untrusted read whose result the policy had not seen when it decided (the result late on the bus,
its consumer rejoining) escalates `tainted_argument`, failing closed: any outside counterparty may come from what it
did not see. The approver read "an important argument (to) came from content the task read that nobody vouched for
(a possible prompt injection)" and, beside the argument, "someone@example.com was read in the results of get_ticket,
not seen yet": both say the value was found in untrusted content, which nobody knows. They look for an injection in a
ticket that may hold none, or trust the sentence over the call. The code stays `tainted_argument` (integrators match it).
"""

from __future__ import annotations

from test_policy_provenance import _decide, _read_ticket, service  # noqa: F401  (the fixture)

from services.policy.service import PolicyService
from services.policy.settings import PolicySettings


async def test_an_argument_whose_source_was_not_seen_is_said_to_be_of_unknown_origin(service: PolicyService) -> None:  # noqa: F811
    service.settings = PolicySettings(provenance_wait_s=0)
    assert (await _decide(service, "a-0", "get_ticket", {"ticket_id": "T-9"})).outcome == "allow"
    d = await _decide(service, "a-1", "send_reply", {"ticket_id": "T-9", "to": "someone@example.com", "body": "hi"})
    assert d.outcome == "escalate"
    message = next(r.message for r in d.reasons if r.code.value == "tainted_argument")
    assert "came from content the task read" not in message  # not known: it was not seen
    assert "(to)" in message
    assert "not seen" in message
    assert "the results of get_ticket" in message  # what the policy had not seen
    (finding,) = [t for t in d.facts["taint"] if t["arg"] == "to"]
    assert "was read in" not in finding["why"]
    assert finding["why"] == "someone@example.com: where it came from is not known (the results of get_ticket, not seen yet)"


async def test_an_argument_traced_to_untrusted_content_keeps_the_injection_message(service: PolicyService) -> None:  # noqa: F811
    await _read_ticket(service)
    d = await _decide(service, "a-1", "send_reply", {"ticket_id": "T-9", "to": "attacker@evil.example", "body": "receipt"})
    reason = next(r for r in d.reasons if r.code.value == "tainted_argument")
    assert reason.message.startswith("an important argument (to) came from content the task read that nobody vouched for")
    assert all("was read in" in t["why"] for t in d.facts["taint"])
