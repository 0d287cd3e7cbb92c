"""What an approver reads of a granted call's result (`outcome`) and of earlier grants never carried out (`earlier`).

Both come from the result's own fields through the schemas' one rule (`ActionResultData.refusal`: a failed result
with 0 attempts is a refusal, not a call), never from the summary string the service writes beside them.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_approval_service_api import World, bearer, decided, world  # noqa: F401  (the fixture)

from schemas import ActionResultData, ErrorInfo, ReasonCode

RESULT_TYPE = {"succeeded": "tidegate.action.succeeded", "failed": "tidegate.action.failed", "unknown": "tidegate.action.unknown"}
REFUSED = {"refused", "expired_unused"}


def result(action_id: str, status: str, attempts: int, error: tuple[str, str] | None = None) -> ActionResultData:
    return ActionResultData(
        action_id=action_id,
        task_id="t-1",
        tenant_id="acme",
        tool="issue_refund",
        status=status,  # type: ignore[arg-type]
        attempts=attempts,
        duration_ms=0 if attempts == 0 else 12,
        error=ErrorInfo(type=error[0], message=error[1]) if error else None,
    )


async def granted(world: World, action_id: str, args: dict[str, Any] | None = None) -> str:  # noqa: F811
    """A request for `action_id`, granted by bob; its id."""
    record = await world.service.on_decided(decided(action_id, args=args), event_id=f"d-{action_id}", at=world.clock())
    assert record is not None
    approved = await world.client.post(
        f"/api/v1/approvals/{record.approval_id}/approve", json={"action_digest": record.action_digest}, headers=bearer(world.tokens["bob"])
    )
    assert approved.json()["status"] == "granted", approved.text
    return record.approval_id


async def shown(world: World, approval_id: str) -> dict[str, Any]:  # noqa: F811
    answer = await world.client.get(f"/api/v1/approvals/{approval_id}", headers=bearer(world.tokens["dan"]))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def kept(world: World, data: ActionResultData, event_id: str) -> None:  # noqa: F811
    await world.service.on_result(data, event_type=RESULT_TYPE[data.status], event_id=event_id, at=world.clock())


CASES = [
    ("succeeded", 1, None, {"status": "executed", "reason": None, "message": None, "attempts": 1}),
    ("succeeded", 3, None, {"status": "executed", "reason": None, "message": None, "attempts": 3}),
    ("failed", 2, ("http_503", "helpdesk down"), {"status": "failed", "reason": "http_503", "message": "helpdesk down", "attempts": 2}),
    (
        "unknown",
        1,
        ("timeout", "no answer in 5 s"),
        {"status": "unknown", "reason": "timeout", "message": "no answer in 5 s", "attempts": 1},
    ),
    (
        "failed",
        0,
        ("authorization_expired", "expired 2 s before the executor read it"),
        {
            "status": "expired_unused",
            "reason": "authorization_expired",
            "message": "expired 2 s before the executor read it",
            "attempts": 0,
        },
    ),
    ("failed", 0, ("kill_switch", "stopped"), {"status": "refused", "reason": "kill_switch", "message": "stopped", "attempts": 0}),
    ("failed", 0, None, {"status": "refused", "reason": None, "message": None, "attempts": 0}),
    (
        "failed",
        1,
        ("authorization_expired", "the tool's own token expired"),  # a call was made: the tool's failure, not a refusal
        {"status": "failed", "reason": "authorization_expired", "message": "the tool's own token expired", "attempts": 1},
    ),
    (
        "failed",
        2,
        ("http_400", "bad: input: after 0 attempt(s)"),  # colons and a summary's words in the message
        {"status": "failed", "reason": "http_400", "message": "bad: input: after 0 attempt(s)", "attempts": 2},
    ),
]


@pytest.mark.parametrize(("status", "attempts", "error", "expected"), CASES)
async def test_a_granted_calls_outcome_is_read_from_its_results_fields(
    world: World,  # noqa: F811
    status: str,
    attempts: int,
    error: tuple[str, str] | None,
    expected: dict[str, Any],
) -> None:
    approval_id = await granted(world, "a-1")
    assert (await shown(world, approval_id))["outcome"] is None  # no result yet
    data = result("a-1", status, attempts, error)
    await kept(world, data, "r-1")
    outcome = (await shown(world, approval_id))["outcome"]
    assert {k: v for k, v in outcome.items() if k != "at"} == expected
    assert (outcome["status"] in REFUSED) == (data.refusal is not None)  # the schemas' rule, not another


async def test_a_grant_whose_authorization_expired_unused_is_named_on_the_request_asked_again(world: World) -> None:  # noqa: F811
    first = await granted(world, "a-1")
    message = "the authorization expired at 10:00:00 before the executor read it"
    await kept(world, result("a-1", "failed", 0, ("authorization_expired", message)), "r-1")
    again = await world.service.on_decided(decided("a-2"), event_id="d-a-2", at=world.clock())  # the same call, proposed again
    assert again is not None
    [earlier] = (await shown(world, again.approval_id))["earlier"]
    assert {k: v for k, v in earlier.items() if k != "decided_at"} == {
        "approval_id": first,
        "action_id": "a-1",
        "approvers": ["bob@acme.example"],
        "why": f"approved by bob@acme.example, but its authorization expired before the executor ran it ({message}): nothing was done, "
        "so the call is asked again",
    }
    assert (await shown(world, first))["earlier"] == []  # the request that was carried out names nothing before it


@pytest.mark.parametrize(
    ("status", "attempts", "error"),
    [
        ("failed", 0, ("kill_switch", "stopped")),  # refused, but not for an expired authorization
        ("failed", 1, ("authorization_expired", "the tool's own token expired")),  # a call was made
        ("succeeded", 1, None),
    ],
)
async def test_only_a_grant_refused_for_its_expired_authorization_is_an_earlier_grant(
    world: World,  # noqa: F811
    status: str,
    attempts: int,
    error: tuple[str, str] | None,
) -> None:
    await granted(world, "a-1")
    await kept(world, result("a-1", status, attempts, error), "r-1")
    again = await world.service.on_decided(decided("a-2"), event_id="d-a-2", at=world.clock())
    assert again is not None
    assert (await shown(world, again.approval_id))["earlier"] == []


async def test_an_earlier_grant_of_another_call_is_not_named(world: World) -> None:  # noqa: F811
    await granted(world, "a-1")
    await kept(world, result("a-1", "failed", 0, ("authorization_expired", "expired")), "r-1")
    other = await world.service.on_decided(
        decided("a-2", args={"payee_id": "cus_2", "amount_usd": 900.0, "order_id": "O-2"}), event_id="d", at=world.clock()
    )
    assert other is not None
    assert (await shown(world, other.approval_id))["earlier"] == []


async def test_an_error_type_that_reads_as_the_expired_code_in_a_summary_is_not_taken_for_it(world: World) -> None:  # noqa: F811
    """The summary `failed after 0 attempt(s): authorization_expired: late by 2 s: ...` reads, to a parser of it, as the code.

    The executor's error type here is `authorization_expired: late by 2 s` (not the reason code): the schemas' rule calls
    it a refusal with that reason, so the call is `refused`, not `expired_unused`, and no later request names it as a
    grant whose authorization expired.
    """
    first = await granted(world, "a-1")
    await kept(world, result("a-1", "failed", 0, ("authorization_expired: late by 2 s", "refused")), "r-1")
    data = result("a-1", "failed", 0, ("authorization_expired: late by 2 s", "refused"))
    assert data.refusal == "authorization_expired: late by 2 s"
    assert data.refusal != ReasonCode.AUTHORIZATION_EXPIRED
    outcome = (await shown(world, first))["outcome"]
    assert (outcome["status"], outcome["reason"], outcome["message"]) == ("refused", "authorization_expired: late by 2 s", "refused")
    again = await world.service.on_decided(decided("a-2"), event_id="d-a-2", at=world.clock())
    assert again is not None
    assert (await shown(world, again.approval_id))["earlier"] == []
