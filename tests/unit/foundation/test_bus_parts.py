"""The bus, split by job, stays one `Bus`: its public names where they were, each method in one part, one logger.

`Bus` is composed of one part a job over `BusBase` (`_bus_publish`, `_bus_deadletter`, `_bus_handle`, `_bus_acks`,
`_bus_subscribe`); these tests hold that what services and tests import from `servicekit.bus` and `servicekit` is
still there, that no two parts define the same method (which would let the order of the composition pick one
silently), and that every part logs under the bus's one logger name, as the single module did.
"""

from __future__ import annotations

import inspect
import logging

import pytest
from test_bus import FakeRecord, make_bus, proposal

import servicekit
import servicekit.bus as bus_module
from servicekit._bus_base import BusBase
from servicekit.bus import Bus

PARTS = [part for part in Bus.__mro__ if part is not Bus and issubclass(part, BusBase)]


def own_methods(cls: type) -> set[str]:
    """The methods `cls` itself defines (not those it inherits)."""
    return {name for name, value in vars(cls).items() if inspect.isfunction(value)}


def test_the_bus_module_keeps_its_public_names() -> None:
    kept = "TRANSIENT_ERRORS Bus Handler OutputRefused Producer Recorded Reject once_delivered once_delivered_together"
    assert sorted(bus_module.__all__) == sorted(kept.split())  # as the single module declared them
    for name in [*bus_module.__all__, "service_bus", "GRACEFUL_TIMEOUT_S"]:
        assert hasattr(bus_module, name), name
    for name in ("Bus", "Handler", "Reject", "once_delivered", "once_delivered_together", "service_bus"):
        assert getattr(servicekit, name) is getattr(bus_module, name), name


def test_each_method_lives_in_exactly_one_part() -> None:
    assert [part.__name__ for part in PARTS] == ["Subscribing", "Acknowledging", "Handling", "DeadLettering", "Publishing", "BusBase"]
    homes: dict[str, list[str]] = {}
    for part in [Bus, *PARTS]:
        for name in own_methods(part) - {"__init__", "__repr__", "__eq__"}:  # the dataclass's own, made once on the base
            homes.setdefault(name, []).append(part.__name__)
    assert {name: where for name, where in homes.items() if len(where) != 1} == {}


async def test_every_part_logs_as_the_bus(caplog: pytest.LogCaptureFixture) -> None:
    """A handler's failure (`_bus_handle`) and its dead letter (`_bus_deadletter`) are the bus's lines, as they were."""
    bus, _ = make_bus()

    async def failing(event: object) -> None:
        raise KeyError("a bug")

    with caplog.at_level(logging.WARNING):
        await bus.handle_record("actions.proposed", FakeRecord("p.actions.proposed", proposal()), failing)
    assert [(r.name, r.getMessage()[:30]) for r in caplog.records] == [
        ("servicekit.bus", "policy: handler failed on p.ac"),
        ("servicekit.bus", "rejected p.actions.proposed[2]"),
    ]
