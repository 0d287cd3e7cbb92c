"""An executor whose clock is behind the broker's does not carry out an authorization already expired (game day F2).

The executor judged an authorization's `expires_at` at its own clock only: one ten minutes behind carried out
authorizations the policy had signed to expire minutes before, at the policy's and the broker's time. Its producer
reads the broker's append time off each acknowledgement (`servicekit.clock`); expiry is now judged at the later of the
two, so a clock behind is caught up to the broker's and one that agrees changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from servicekit import Reject
from servicekit.clock import LOG_APPEND_TIME, BrokerClock
from services.executor.app import _judging_clock
from tests.unit.executor.test_executor import NOW, make_world

BEHIND_S = 600.0


@dataclass
class Appended:
    """What aiokafka's `RecordMetadata` says of a record the broker stamped itself."""

    timestamp: int
    timestamp_type: int = LOG_APPEND_TIME


def clock_after_one_acknowledgement(broker_ahead_s: float) -> BrokerClock:
    """This host's clock stopped at NOW, after one record the broker appended at NOW + `broker_ahead_s`."""
    clock = BrokerClock(now=NOW.timestamp)
    clock.note(NOW.timestamp() - 0.01, NOW.timestamp(), Appended(round((NOW.timestamp() + broker_ahead_s) * 1000)))
    return clock


def test_the_judging_time_is_the_later_of_this_hosts_and_the_brokers() -> None:
    assert clock_after_one_acknowledgement(BEHIND_S).latest() == pytest.approx(NOW.timestamp() + BEHIND_S, abs=0.02)
    assert clock_after_one_acknowledgement(-BEHIND_S).latest() == NOW.timestamp()  # this clock ahead: its own time
    assert clock_after_one_acknowledgement(0.0).latest() == NOW.timestamp()
    assert BrokerClock(now=NOW.timestamp).latest() == NOW.timestamp()  # before any acknowledgement: this host's time


async def test_an_executor_ten_minutes_behind_refuses_an_authorization_expired_at_the_brokers_time(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    world.executor.clock = _judging_clock(SimpleNamespace(producer=SimpleNamespace(clock=clock_after_one_acknowledgement(BEHIND_S))))
    stale = world.authorize(ttl_s=300)  # expired 5 minutes ago at the broker's time, 5 minutes left at this host's
    with pytest.raises(Reject) as refused:
        await world.executor.handle(stale)
    assert refused.value.code == "authorization_expired"
    assert world.tool.contexts == []  # nothing ran


async def test_an_executor_whose_clock_agrees_carries_it_out(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    world.executor.clock = _judging_clock(SimpleNamespace(producer=SimpleNamespace(clock=clock_after_one_acknowledgement(0.0))))
    await world.executor.handle(world.authorize(ttl_s=300))
    assert len(world.tool.contexts) == 1
