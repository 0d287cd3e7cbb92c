"""A policy whose clock is ahead of the broker's does not sign authorizations that live longer (game day leftover).

The policy set an authorization's `expires_at` at its own clock: a policy host ten minutes ahead signed every
authorization to expire ten minutes later at the broker's (and a correct executor's) time, a security bound loosened by
whoever's clock drifts. Its producer reads the broker's append time off each acknowledgement (`servicekit.clock`); an
authorization is now issued at the broker's time as last read, so a clock ahead is brought back to it and one that
agrees changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

from servicekit import KitSettings
from servicekit.clock import BrokerClock, issuing_clock
from services.policy import InMemoryPolicyRepository
from services.policy.app import PolicyDeps, build
from services.policy.service import PolicyService
from tests.unit.executor.test_clock_behind import Appended
from tests.unit.policy.test_policy_service import NOW, Published, proposed, published, refund, service  # noqa: F401  (fixtures)

AHEAD_S = 600.0
TTL_S = 60


def host_clock_ahead(ahead_s: float) -> BrokerClock:
    """This host's clock stopped `ahead_s` after NOW, after one record the broker appended at NOW."""
    host = (NOW + timedelta(seconds=ahead_s)).timestamp()
    clock = BrokerClock(now=lambda: host)
    clock.note(host - 0.01, host, Appended(round(NOW.timestamp() * 1000)))
    return clock


async def authorization_of(policy: PolicyService, out: Published) -> tuple[datetime, datetime]:
    await policy.on_proposed(proposed("issue_refund", refund()))
    [auth] = out.on("actions.authorized")
    return auth.data.authorization.issued_at, auth.data.authorization.expires_at


async def test_a_policy_ten_minutes_ahead_signs_an_authorization_that_expires_ttl_after_the_brokers_time(
    service: PolicyService,  # noqa: F811
    published: Published,  # noqa: F811
) -> None:
    service.clock = lambda: NOW + timedelta(seconds=AHEAD_S)
    service.issuing_clock = issuing_clock(SimpleNamespace(clock=host_clock_ahead(AHEAD_S)))
    issued, expires = await authorization_of(service, published)
    assert abs((expires - (NOW + timedelta(seconds=TTL_S))).total_seconds()) < 0.05  # not NOW + 600 s + 60 s
    assert expires - issued == timedelta(seconds=TTL_S)


async def test_a_policy_whose_clock_agrees_signs_as_before(service: PolicyService, published: Published) -> None:  # noqa: F811
    service.issuing_clock = issuing_clock(SimpleNamespace(clock=host_clock_ahead(0.0)))
    assert await authorization_of(service, published) == (NOW, NOW + timedelta(seconds=TTL_S))


def test_the_policy_service_issues_at_its_producers_reading_of_the_brokers_time(tmp_path: Path) -> None:
    """What `tidegate up` runs: the service built with its bus issues at the broker's time its producer reads."""
    (tmp_path / "keys").mkdir()
    process = build(KitSettings(keys_dir=tmp_path / "keys"), deps=PolicyDeps(repo=InMemoryPolicyRepository()))
    producer_clock = process.bus.producer.clock  # type: ignore[attr-defined]
    ahead = host_clock_ahead(AHEAD_S)
    producer_clock.now, producer_clock.offset_s = ahead.now, ahead.offset_s
    assert process.policy.issuing_clock is not None
    assert abs((process.policy.issuing_clock() - NOW.astimezone(UTC)).total_seconds()) < 0.05
