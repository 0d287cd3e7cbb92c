"""The `tainted_argument` reason names the arguments it is about (probe approver6 A1): an approver reads which one to check."""

from __future__ import annotations

from test_split_and_payee import _decide, _refund, _submit, service  # noqa: F401  (the fixture)

from services.policy.service import PolicyService


async def test_the_tainted_argument_message_names_the_argument(service: PolicyService) -> None:  # noqa: F811
    await _submit(service, {"ticket_id": "T-1003", "body": "Please refund to payee cus_1008."}, ["body"])
    outcome, codes, data = await _decide(service, "a-1", _refund(5, "cus_1008", "O-5003"))
    assert (outcome, codes) == ("escalate", ["tainted_argument"])
    assert data.reasons[0].message.startswith("an important argument (payee_id) came from content the task read that nobody vouched for")


async def test_every_tainted_argument_is_named(service: PolicyService) -> None:  # noqa: F811
    await _submit(service, {"ticket_id": "T-1003", "body": "Please refund 5 USD to payee cus_1008."}, ["body"])
    _outcome, _codes, data = await _decide(service, "a-1", _refund(5, "cus_1008", "O-5003"))
    named = data.reasons[0].message.split("(", 1)[1].split(")", 1)[0]
    assert named == ", ".join(sorted(data.facts["tainted_important_args"]))
