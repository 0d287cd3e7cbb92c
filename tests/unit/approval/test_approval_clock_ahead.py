"""An approval service whose clock is off from the broker's issues no longer lifetime, and honours no token past its end.

Release 19 judged deadlines at the later of the host's clock and the broker's, but set them from that same later time:
a copy ten minutes ahead gave every request it opened ten minutes more at the broker's (and every other copy's) time,
so a request was approved ten minutes past its deadline elsewhere; the same for its links and the tokens it rotated.
And a token's life was judged at PostgreSQL's clock only: a database ten minutes behind the broker kept an expired token
valid for ten minutes more. The attacker here is whoever holds a request, a link or a token past its end.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

from test_approval_service_api import World, bearer, decided, world  # noqa: F401  (the fixture)

from servicekit import KitSettings
from servicekit.clock import BrokerClock, issuing_clock, judging_clock
from services.approval import auth
from services.approval.app import build
from tests.unit.executor.test_clock_behind import Appended

AHEAD_S = 600.0


def off_by(now: float, host_ahead_s: float, clock: BrokerClock | None = None) -> BrokerClock:
    """A producer's clock on a host `host_ahead_s` ahead of the broker's (behind when negative), one acknowledgement read."""
    clock = clock or BrokerClock(now=lambda: now)
    clock.note(now - 0.01, now, Appended(round((now - host_ahead_s) * 1000)))
    return clock


async def test_a_copy_ten_minutes_ahead_opens_a_request_whose_deadline_is_set_from_the_brokers_time(world: World) -> None:  # noqa: F811
    host = world.clock().timestamp()
    producer = SimpleNamespace(clock=off_by(host, AHEAD_S))
    world.service.clock = judging_clock(producer)
    world.service.issuing_clock = issuing_clock(producer)
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    broker_now = datetime.fromtimestamp(host - AHEAD_S, UTC)
    meant = timedelta(seconds=world.service.settings.expiry_s)
    assert abs((record.expires_at - broker_now) - meant) < timedelta(seconds=1), record.expires_at  # not ten minutes more
    assert abs(record.created_at - broker_now) < timedelta(seconds=1)


async def test_a_token_expired_at_the_brokers_time_is_refused_though_the_database_says_it_lives(world: World) -> None:  # noqa: F811
    token = auth.new_token()
    live_for_the_database = datetime.now(UTC) + timedelta(minutes=5)  # the store judges at its own clock: 5 minutes left
    await world.repo.add_token(auth.hash_token(token), "erin@acme.example", "acme", ["finance"], expires_at=live_for_the_database)
    world.service.clock = judging_clock(SimpleNamespace(clock=off_by(time.time(), -AHEAD_S, BrokerClock())))  # broker 10 min ahead
    answer = await world.client.get("/api/v1/approvals", headers=bearer(token))
    assert answer.status_code == 401, answer.text
    agreeing = judging_clock(SimpleNamespace(clock=off_by(time.time(), 0.0, BrokerClock())))
    world.service.clock = agreeing
    assert (await world.client.get("/api/v1/approvals", headers=bearer(token))).status_code == 200


async def test_a_copy_ten_minutes_ahead_keeps_a_rotated_secret_for_its_overlap_at_the_brokers_time(world: World) -> None:  # noqa: F811
    """The holder of an endpoint's superseded secret: its overlap ends `overlap_s` after the rotation at the broker's time.

    Before, the overlap's end was set from the later of the host's time and the broker's: a copy ten minutes ahead kept
    the former secret signing messages and verifying callbacks ten minutes longer at every other copy's time.
    """
    from test_webhook_secret_rotation import ENDPOINTS, _chat

    tokens = await _chat(world)
    host = world.clock().timestamp()
    producer = SimpleNamespace(clock=off_by(host, AHEAD_S))
    world.service.clock = judging_clock(producer)
    world.service.issuing_clock = issuing_clock(producer)
    rotated = await world.client.post(f"{ENDPOINTS}/chat/rotate?tenant_id=acme", json={"overlap_s": 120}, headers=bearer(tokens["ops"]))
    assert rotated.status_code == 200, rotated.text
    stored = await world.repo.endpoint("acme", "chat")
    assert stored is not None
    until = stored.former_until
    assert until is not None
    broker_now = datetime.fromtimestamp(host - AHEAD_S, UTC)
    assert abs((until - broker_now) - timedelta(seconds=120)) < timedelta(seconds=1), until  # not ten minutes more


async def test_the_approval_service_issues_at_its_producers_reading_of_the_brokers_time(tmp_path: Path) -> None:
    """What `tidegate up` runs: built with its bus, the service sets lifetimes from the broker's time as last read."""
    (tmp_path / "keys").mkdir()
    process = build(KitSettings(keys_dir=tmp_path / "keys", tools_dir=tmp_path / "no-tools"))
    producer_clock = process.bus.producer.clock  # type: ignore[attr-defined]
    producer_clock.offset_s = AHEAD_S  # this host 10 minutes ahead of the broker, as its last acknowledgement showed
    service = process.approval
    assert service is not None
    issued = service.issued_now().timestamp()
    assert producer_clock.now() - issued >= AHEAD_S - 1
