"""An approval service whose clock is behind the broker's does not let a request be approved past its deadline (game day).

The approval service judged a request's deadline at its own clock: a copy on a host ten minutes behind (the request
made by another copy, or before its clock was set back) let an approver grant a request five minutes after it had
expired at the broker's and every other copy's time. Its producer reads the broker's append time off each
acknowledgement (`servicekit.clock`); deadlines are now judged at the later of the two, so a clock behind is caught up
to the broker's and one that agrees changes nothing.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

from test_approval_service_api import World, bearer, decided, world  # noqa: F401  (the fixture)

from servicekit import KitSettings
from servicekit.clock import BrokerClock, judging_clock
from services.approval.app import build
from tests.unit.executor.test_clock_behind import Appended

BEHIND_S = 600.0


def host_behind(world: World, behind_s: float) -> BrokerClock:  # noqa: F811
    """The world's clock as this host's, `behind_s` behind the broker's (one acknowledgement read)."""
    clock = BrokerClock(now=lambda: world.clock().timestamp())
    host = world.clock().timestamp()
    clock.note(host - 0.01, host, Appended(round((host + behind_s) * 1000)))
    return clock


async def test_a_copy_ten_minutes_behind_refuses_to_approve_a_request_expired_at_the_brokers_time(world: World) -> None:  # noqa: F811
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())  # made where the clock agrees
    assert record is not None
    world.clock.now = record.expires_at + timedelta(seconds=300) - timedelta(seconds=BEHIND_S)  # 5 min past, at 10 min behind
    world.service.clock = judging_clock(SimpleNamespace(clock=host_behind(world, BEHIND_S)))
    url = f"/api/v1/approvals/{record.approval_id}/approve"
    answer = await world.client.post(url, json={"action_digest": record.action_digest}, headers=bearer(world.tokens["bob"]))
    assert answer.status_code == 409, answer.text
    assert answer.json()["detail"]["code"] == "expired"
    assert world.bus.types() == ["tidegate.approval.requested"]  # nothing granted
    assert (await world.service.sweep())["expired"] == 1


async def test_a_copy_whose_clock_agrees_still_approves_in_time(world: World) -> None:  # noqa: F811
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    world.clock.now = record.expires_at - timedelta(seconds=60)
    world.service.clock = judging_clock(SimpleNamespace(clock=host_behind(world, 0.0)))
    url = f"/api/v1/approvals/{record.approval_id}/approve"
    answer = await world.client.post(url, json={"action_digest": record.action_digest}, headers=bearer(world.tokens["bob"]))
    assert answer.status_code == 200, answer.text


async def test_the_approval_service_judges_at_its_producers_reading_of_the_brokers_time(tmp_path: Path) -> None:
    """What `tidegate up` runs: the service built with its bus judges at the later of its host's and the broker's time."""
    (tmp_path / "keys").mkdir()
    process = build(KitSettings(keys_dir=tmp_path / "keys", tools_dir=tmp_path / "no-tools"))
    producer_clock = process.bus.producer.clock  # type: ignore[attr-defined]
    producer_clock.offset_s = -BEHIND_S  # this host 10 minutes behind the broker, as its last acknowledgement showed
    judged = process.approval.clock().timestamp()
    assert judged - producer_clock.now() >= BEHIND_S - 1
