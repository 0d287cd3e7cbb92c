"""A call no service could read is refused before anything is recorded or sent, with the services' own bounds.

Sent, the policy would dead-letter it (`too_large`, `too_deep`) or the broker refuse it: no answer would ever
come, and a proposal recorded as unsent would be "retried once the bus is back" for ever.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError
from pydantic import ValidationError

from schemas import ActionProposed, ActionProposedData, Envelope, encode
from servicekit.intake import Bounds, Refused, check_bounds
from servicekit.settings import KitSettings
from tidegate.client import ClientSettings, Executed, KafkaTransport, MemoryTransport, SqliteProposals, Tidegate, Unsendable
from tidegate.client import transport as transport_module
from tidegate.client.limits import ENCLOSING_DEPTH
from tidegate.client.scripted import ScriptedTidegate

SERVICES = KitSettings.model_fields


def governed(bus: MemoryTransport) -> ScriptedTidegate:
    """A deployment on `bus` (its keys are what the client trusts; a fresh clone has no `.tidegate/keys` to fall back on)."""
    return ScriptedTidegate(bus, lambda p: ("allow", "low_risk_write_allowed"))


def nested(levels: int) -> Any:
    """A value `levels` deep: `levels` lists, the innermost empty."""
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


def proposal(args: dict[str, Any]) -> ActionProposed:
    data = ActionProposedData(action_id="a-1", task_id="t-1", tenant_id="acme", step=1, tool="tag_ticket", args=args, proposer="test")
    return ActionProposed.build(data, source="urn:test")


def as_sent(args: dict[str, Any]) -> bytes:
    """A proposal's record with these args, as the policy's consumer reads it."""
    return encode(proposal(args))


def test_the_clients_bounds_are_the_services_defaults() -> None:
    settings = ClientSettings()
    assert settings.max_proposal_bytes == SERVICES["max_value_bytes"].default
    assert settings.max_json_depth == SERVICES["max_json_depth"].default


async def test_args_nested_past_the_services_bound_are_refused_naming_the_arg_and_nothing_is_sent(tmp_path: Path) -> None:
    bus = MemoryTransport()
    depth = ClientSettings().max_json_depth
    deepest = {"ticket_id": "T-1", "extra": nested(depth - ENCLOSING_DEPTH - 1)}  # with the args object: the bound exactly
    deeper = {"ticket_id": "T-1", "extra": nested(depth - ENCLOSING_DEPTH)}
    check_bounds(as_sent(deepest), Bounds(max_depth=depth))  # the policy reads the one ...
    with pytest.raises(Refused, match="nested deeper"):
        check_bounds(as_sent(deeper), Bounds(max_depth=depth))  # ... and dead-letters the other
    async with (
        ScriptedTidegate(
            bus, lambda p: ("allow", "low_risk_write_allowed"), tools={"tag_ticket": lambda args: {"tagged": True}}
        ) as scripted,
        Tidegate(transport=bus, proposals=SqliteProposals(tmp_path / "p.sqlite3")) as client,
    ):
        with pytest.raises(Unsendable, match=r"args nest deeper than 62 levels \(at arg extra(\[0\])+\)") as refused:
            await client.propose("tag_ticket", deeper, action_id="too-deep")
        assert (refused.value.code, client.proposals.lookup("too-deep")) == ("too_deep", None)
        assert isinstance(await client.propose("tag_ticket", deepest, action_id="deepest"), Executed)
    assert [p.action_id for p in scripted.proposals] == ["deepest"]


async def test_args_nested_100000_deep_are_refused_not_a_recursion_error() -> None:
    bus = MemoryTransport()
    async with governed(bus), Tidegate(transport=bus) as client:
        with pytest.raises(Unsendable, match="args nest deeper"):
            await client.propose("tag_ticket", {"extra": nested(100_000)})
    assert bus.topics["actions.proposed"] == []


async def test_a_call_larger_than_the_services_read_is_refused_before_it_is_recorded(tmp_path: Path) -> None:
    bus = MemoryTransport()
    async with governed(bus), Tidegate(transport=bus, proposals=SqliteProposals(tmp_path / "p.sqlite3")) as client:
        with pytest.raises(
            Unsendable, match=r"too large: its proposal is 20\d{5} bytes, and Tidegate takes at most 1048576 bytes"
        ) as refused:
            await client.propose("tag_ticket", {"text": "x" * 2_000_000}, action_id="too-large")
        assert (refused.value.code, client.proposals.lookup("too-large")) == ("too_large", None)
        with pytest.raises(Unsendable, match="too large"):  # a retry as told is refused the same way, never "unsent"
            await client.propose("tag_ticket", {"text": "x" * 2_000_000}, action_id="too-large")
    assert bus.topics["actions.proposed"] == []


class SmallBroker(MemoryTransport):
    """A bus whose broker takes no record over `limit` bytes, refused as `KafkaTransport` refuses it."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    async def publish(self, topic: str, event: Envelope) -> None:
        if len(encode(event)) > self.limit:
            raise Unsendable("the call is too large for this broker", code="too_large")
        await super().publish(topic, event)


async def test_a_proposal_the_broker_refuses_as_too_large_is_withdrawn_not_left_unsent(tmp_path: Path) -> None:
    bus = SmallBroker(limit=4000)
    async with (
        ScriptedTidegate(bus, lambda p: ("allow", "low_risk_write_allowed"), tools={"tag_ticket": lambda args: {"tagged": True}}),
        Tidegate(transport=bus, proposals=SqliteProposals(tmp_path / "p.sqlite3")) as client,
    ):
        with pytest.raises(Unsendable, match="too large for this broker"):
            await client.propose("tag_ticket", {"text": "x" * 5000}, action_id="big")
        assert (client.proposals.lookup("big"), client.proposals.unsent("big")) == (None, None)
        # The id is free again: the same id for a call the broker takes is that call's, not "reused".
        assert isinstance(await client.propose("tag_ticket", {"text": "x"}, action_id="big"), Executed)


class RefusingProducer:
    """aiokafka's producer with a record over its `max_request_size` (or the broker's `message.max.bytes`)."""

    def __init__(self, **options: Any) -> None:
        pass

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send_and_wait(self, topic: str, value: bytes, **kwargs: Any) -> None:
        raise MessageSizeTooLargeError(f"The message is {len(value) + 90} bytes when serialized which is larger than the maximum")


async def test_the_kafka_transport_says_a_record_too_large_for_the_broker_is_unsendable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport_module, "AIOKafkaProducer", RefusingProducer)
    bus = KafkaTransport(ClientSettings())
    await bus.start()
    with pytest.raises(Unsendable, match=r"its proposal is \d+ bytes, and Tidegate takes no more than the broker does") as refused:
        await bus.publish("actions.proposed", proposal({}))
    await bus.stop()
    assert refused.value.code == "too_large"


async def test_a_nul_in_an_arg_is_refused_naming_the_arg() -> None:
    bus = MemoryTransport()
    async with governed(bus), Tidegate(transport=bus) as client:
        with pytest.raises(ValidationError, match=r"args\.`refund\.lines\[1\]`\n.*U\+0000"):
            await client.propose("issue_refund", {"refund": {"lines": ["a", "b\u0000"]}})
        with pytest.raises(ValidationError, match=r"U\+0000"):  # in an arg's name
            await client.propose("issue_refund", {"bad\u0000key": 1})
    assert bus.topics["actions.proposed"] == []
