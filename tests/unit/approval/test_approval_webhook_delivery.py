"""Webhook delivery as the approver on a healthy chat tool sees it beside a slow one, a receiver that is down for a while,
and the links one message carries (approver probe 2, findings 1, 6 and 3(b)).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from prometheus_client import REGISTRY
from test_approval_service_api import World, decided, world  # noqa: F401  (the fixture)

from services.approval import webhooks
from services.approval.repository import Endpoint
from services.approval.service import ApprovalService
from services.approval.webhooks import SendResult

HEALTHY, SLOW = "http://chat.test/hook", "http://tarpit.test/hook"
ALICE, BOB, DAN = "alice@acme.example", "bob@acme.example", "dan@acme.example"


@dataclass
class TimedSender:
    """Answers `HEALTHY` at once and `SLOW` after `slow_s`; logs when each send starts and ends, and how many overlap per URL."""

    slow_s: float = 0.2
    down: set[str] = field(default_factory=set)
    log: list[tuple[str, str]] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)
    most_in_flight: dict[str, int] = field(default_factory=dict)
    bodies: list[bytes] = field(default_factory=list)

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> SendResult:
        self.log.append(("start", url))
        self.bodies.append(body)
        self.in_flight[url] = self.in_flight.get(url, 0) + 1
        self.most_in_flight[url] = max(self.most_in_flight.get(url, 0), self.in_flight[url])
        await asyncio.sleep(self.slow_s if url == SLOW else 0)
        self.in_flight[url] -= 1
        self.log.append(("end", url))
        if url in self.down:
            return SendResult(False, 500, "HTTP 500", 1.0)
        return SendResult(True, 200, None, 1.0)

    def ended(self, url: str) -> int:
        return self.log.count(("end", url))


def _service(world: World, sender: TimedSender, **settings: Any) -> ApprovalService:  # noqa: F811
    update = {"webhook_allowed_hosts": ["chat.test", "tarpit.test"], **settings}
    return dataclasses.replace(world.service, sender=sender, settings=world.service.settings.model_copy(update=update))


async def _requests(world: World, service: ApprovalService, n: int, prefix: str = "a", **over: Any) -> list[Any]:  # noqa: F811
    records = [await service.on_decided(decided(f"{prefix}-{i}", **over), event_id=f"{prefix}{i}", at=world.clock()) for i in range(n)]
    assert all(records)
    return records


def _count(status: str) -> float:
    return REGISTRY.get_sample_value("tidegate_webhook_deliveries_total", {"tenant": "acme", "status": status}) or 0.0


async def test_a_slow_receiver_does_not_hold_up_the_healthy_one_beside_it(world: World) -> None:  # noqa: F811
    """Four requests, each to a healthy chat tool and to a slow one: the healthy one has all four before the slow one's first
    attempt ends; the slow one gets one attempt at a time; what it had no time for in this round is due again at once."""
    sender = TimedSender(slow_s=0.2)
    service = _service(world, sender, webhook_timeout_s=0.3)
    await world.repo.upsert_endpoint(Endpoint("chat", HEALTHY, webhooks.new_secret(), "acme"))
    await world.repo.upsert_endpoint(Endpoint("tarpit", SLOW, webhooks.new_secret(), "acme"))
    await _requests(world, service, 4)

    delivered = await service.deliver_webhooks()

    first_slow_end = sender.log.index(("end", SLOW))
    assert sender.log[:first_slow_end].count(("end", HEALTHY)) == 4
    assert sender.most_in_flight == {HEALTHY: 1, SLOW: 1}
    assert sender.ended(SLOW) == 2  # started at 0 and 0.2 s; the round starts nothing after 0.3 s
    assert delivered == 6
    rows = {d.delivery_id: d for d in await world.repo.deliveries()}
    waiting = [d for d in rows.values() if d.endpoint_id == "tarpit" and d.status == "pending"]
    assert len(waiting) == 2
    assert all(d.attempts == 0 and d.next_attempt_at == world.clock() for d in waiting)  # given back, due now, no attempt counted


async def test_an_endpoint_with_a_backlog_does_not_fill_the_claim(world: World) -> None:  # noqa: F811
    await world.repo.upsert_endpoint(Endpoint("tarpit", SLOW, webhooks.new_secret(), "acme"))
    service = _service(world, TimedSender())
    await _requests(world, service, 8)
    await world.repo.upsert_endpoint(Endpoint("chat", HEALTHY, webhooks.new_secret(), "acme"))
    await _requests(world, service, 1, prefix="late")

    claimed = await world.repo.claim_due_deliveries(world.clock(), timedelta(seconds=30), limit=4, per_endpoint=3)

    assert [d.endpoint_id for d, _ in claimed].count("chat") == 1
    assert [d.endpoint_id for d, _ in claimed].count("tarpit") == 3


async def test_a_receiver_down_for_ten_minutes_still_gets_the_message_with_the_default_retries(world: World) -> None:  # noqa: F811
    sender = TimedSender(slow_s=0, down={HEALTHY})
    service = _service(world, sender)
    assert service.settings.webhook_max_attempts == 24  # the defaults, not the fixture's
    await world.repo.upsert_endpoint(Endpoint("chat", HEALTHY, webhooks.new_secret(), "acme"))
    await _requests(world, service, 1)
    retried, delivered = _count("retried"), _count("delivered")
    started = world.clock.now
    while world.clock.now - started < timedelta(minutes=10):
        await service.deliver_webhooks()
        world.clock.now += timedelta(seconds=30)
    (row,) = await world.repo.deliveries()
    assert (row.status, row.attempts) == ("pending", sender.ended(HEALTHY))
    sender.down.clear()
    world.clock.now += timedelta(minutes=31)  # past the longest backoff
    assert await service.deliver_webhooks() == 1
    (row,) = await world.repo.deliveries()
    assert row.status == "delivered"
    assert _count("retried") - retried == row.attempts - 1
    assert _count("delivered") - delivered == 1


async def test_a_message_asking_for_a_decision_is_given_up_when_its_request_expires(world: World) -> None:  # noqa: F811
    sender = TimedSender(slow_s=0, down={HEALTHY})
    service = _service(world, sender, expiry_s=120.0)
    await world.repo.upsert_endpoint(Endpoint("chat", HEALTHY, webhooks.new_secret(), "acme"))
    (record,) = await _requests(world, service, 1)
    failed = _count("failed")
    while world.clock.now < record.expires_at:
        await service.deliver_webhooks()
        world.clock.now += timedelta(seconds=10)
    (row,) = await world.repo.deliveries()
    assert row.status == "failed"
    assert row.attempts < service.settings.webhook_max_attempts
    assert _count("failed") - failed == 1


async def test_links_are_minted_only_for_approvers_who_may_decide(world: World) -> None:  # noqa: F811
    """Alice requested it (four eyes) and Dan is in `security`, not `finance`: neither gets a link; Bob does."""
    sender = TimedSender(slow_s=0)
    service = _service(world, sender)
    await world.repo.upsert_endpoint(Endpoint("chat", HEALTHY, webhooks.new_secret(), "acme", (ALICE, BOB, DAN)))
    await _requests(world, service, 1, requested_by=ALICE)
    assert await service.deliver_webhooks() == 1
    assert sorted(json.loads(sender.bodies[0])["data"]["links"]) == [BOB]


async def test_a_receiver_back_after_ten_minutes_gets_what_it_missed_at_once_not_after_its_backoff(world: World) -> None:  # noqa: F811
    """The on-call's night: the chat bridge down 10 min; once back, a request raised then waited 7 more minutes unsent.

    Its message was waiting out a backoff of 8.5 min (1 s doubling) while newer messages to the same endpoint went through:
    the approvers learnt of the newer requests and not of it, and nothing the on-call could run sent it sooner.
    """
    sender = TimedSender(slow_s=0, down={HEALTHY})
    service = _service(world, sender)
    await world.repo.upsert_endpoint(Endpoint("chat", HEALTHY, webhooks.new_secret(), "acme"))
    await _requests(world, service, 1, prefix="night")
    started = world.clock.now
    while world.clock.now - started < timedelta(minutes=10):
        await service.deliver_webhooks()
        world.clock.now += timedelta(seconds=5)
    (missed,) = await world.repo.deliveries()
    assert missed.status == "pending"
    assert missed.next_attempt_at is not None
    assert missed.next_attempt_at - world.clock.now > timedelta(minutes=2)  # its backoff outlasts the outage

    sender.down.clear()  # the receiver is back; a new request is raised and sent at once
    await _requests(world, service, 1, prefix="morning")
    assert await service.deliver_webhooks() == 1
    world.clock.now += timedelta(seconds=1)
    assert await service.deliver_webhooks() == 1  # the one it missed, the next round: not minutes later
    rows = {d.approval_id: d for d in await world.repo.deliveries()}
    assert [(r.status, r.approval_id) for r in rows.values() if r.status != "delivered"] == []


async def test_a_chat_back_after_an_outage_hears_of_a_request_before_its_decision(world: World) -> None:  # noqa: F811
    """The chat reader (upgrade25): the bridge was down while a refund was raised and bob approved it from the page. Its
    request's message waited out a long backoff while the decision's fell due at once, so the bridge, back, posted
    "granted" before the "approve?" it settles. A request's messages now reach an endpoint in the order they were queued."""
    sender = TimedSender(slow_s=0, down={HEALTHY})
    service = _service(world, sender)
    await world.repo.upsert_endpoint(Endpoint("chat", HEALTHY, webhooks.new_secret(), "acme"))
    (record,) = await _requests(world, service, 1)
    for _ in range(20):  # the bridge is down: each round's attempt fails, and the next waits longer
        await service.deliver_webhooks()
        (waiting,) = await world.repo.deliveries()
        assert waiting.next_attempt_at is not None
        if waiting.next_attempt_at - world.clock() > timedelta(minutes=1):  # a long backoff
            break
        world.clock.now = waiting.next_attempt_at
    assert waiting.attempts > 3
    assert waiting.next_attempt_at - world.clock() > timedelta(minutes=1)
    approved = await world.client.post(
        f"/api/v1/approvals/{record.approval_id}/approve",
        json={"action_digest": record.action_digest},
        headers={"Authorization": f"Bearer {world.tokens['bob']}"},
    )
    assert approved.status_code == 200
    sender.down.clear()
    sender.bodies.clear()
    for _ in range(3):
        await service.deliver_webhooks()
        world.clock.now += timedelta(seconds=1)
    heard = [(json.loads(b)["type"], json.loads(b)["data"]["approval_id"]) for b in sender.bodies]
    assert heard == [("approval.requested", record.approval_id), ("approval.granted", record.approval_id)]
