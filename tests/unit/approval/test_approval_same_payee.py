"""A split refund's pieces side by side: the request an approver opens names the payee's other requests of the day.

Three requests of 501, 503 and 500 USD for one order and payee, each its own task: the approver decided each alone, with
the facts' paid figure as of the proposal's decision (it counted no grant since), and approved the third "as fine on its
own" (the on-call probe). The request now shows the others, their amounts and what became of them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from test_approval_outcome_fields import granted, shown
from test_approval_service_api import World, decided, world  # noqa: F401  (the fixture)


def refund(amount: float, payee: str = "cus_1002") -> dict[str, Any]:
    return {"payee_id": payee, "amount_usd": amount, "order_id": "O-5002"}


async def test_a_request_names_the_payees_other_requests_of_the_day_and_what_became_of_them(world: World) -> None:  # noqa: F811
    old = await world.service.on_decided(decided("a-0", args=refund(700.0), task_id="t-0"), event_id="d-0", at=world.clock())
    assert old is not None
    world.clock.now += timedelta(hours=25)  # a day and more later: outside the payee's daily bound, not shown
    first = await granted(world, "a-1", refund(501.0))
    world.clock.now += timedelta(seconds=1)
    second = await world.service.on_decided(decided("a-2", args=refund(503.0), task_id="t-2"), event_id="d-2", at=world.clock())
    world.clock.now += timedelta(seconds=1)
    other = await world.service.on_decided(decided("a-9", args=refund(900.0, "cus_9"), task_id="t-9"), event_id="d-9", at=world.clock())
    world.clock.now += timedelta(seconds=1)
    third = await world.service.on_decided(decided("a-3", args=refund(500.0), task_id="t-3"), event_id="d-3", at=world.clock())
    assert second is not None
    assert other is not None
    assert third is not None
    siblings = (await shown(world, third.approval_id))["same_payee"]
    assert [(s["approval_id"], s["amount_usd"], s["status"], s["decided_by"]) for s in siblings] == [
        (second.approval_id, 503.0, "pending", None),
        (first, 501.0, "granted", "bob@acme.example"),
    ]
    assert {s["payee"] for s in siblings} == {"cus_1002"}
    assert [s["approval_id"] for s in (await shown(world, other.approval_id))["same_payee"]] == []  # another payee's: none
