"""What the client says, and what it leaves behind, when an integrator gets something wrong: the bus, the login, the key, the call."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from pydantic import SecretStr, ValidationError

from schemas import Envelope
from tidegate.client import ClientSettings, MemoryTransport, Position, Tidegate
from tidegate.client import transport as transport_module
from tidegate.client.scripted import ScriptedTidegate
from tidegate.client.transport import Delivery, KafkaTransport
from tidegate.client.trust import DeploymentKeys


class Unanswered:
    """A bus to a deployment that takes every proposal and answers none (what dead-lettering looks like from outside)."""

    def __init__(self, fail_end: bool = False) -> None:
        self.memory = MemoryTransport()
        self.fail_end = fail_end
        self.started = self.stopped = 0

    async def start(self) -> None:
        self.started += 1

    async def stop(self) -> None:
        self.stopped += 1

    async def publish(self, topic: str, event: Envelope) -> None:
        return None

    async def end(self, topics: tuple[str, ...]) -> Position:
        if self.fail_end:
            raise RuntimeError("topics missing on the broker: nope.actions.decided")
        return await self.memory.end(topics)

    def read(
        self, topics: tuple[str, ...], start: Position | None, *, caught_up: asyncio.Event | None = None
    ) -> AsyncIterator[tuple[str, Any]]:
        return self.memory.read(topics, start, caught_up=caught_up)

    def serve(self, topic: str, group: str) -> AsyncIterator[Delivery]:
        return self.memory.serve(topic, group)


def unanswered_client(bus: Unanswered, **settings: Any) -> Tidegate:
    return Tidegate(ClientSettings(**settings), transport=bus, trust=DeploymentKeys().trust())


async def test_a_client_without_a_signing_key_warns_at_start_and_its_timeout_says_why(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    bus = Unanswered()
    with caplog.at_level(logging.WARNING, logger="tidegate.client.client"):
        async with unanswered_client(bus) as tg:
            assert "signature_missing" in caplog.text
            with pytest.raises(TimeoutError, match=r"unsigned.*signature_missing.*TIDEGATE_CLIENT_SIGNING_KEY_PATH"):
                await tg.propose("tag_ticket", {"ticket_id": "T-1"}, timeout_s=0.05)


async def test_a_signing_client_neither_warns_nor_blames_the_signature(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = tmp_path / "client.key"
    private = Ed25519PrivateKey.generate()
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with caplog.at_level(logging.WARNING, logger="tidegate.client.client"):
        async with unanswered_client(Unanswered(), signing_key_path=key) as tg:
            with pytest.raises(TimeoutError) as timed_out:
                await tg.propose("tag_ticket", {"ticket_id": "T-1"}, timeout_s=0.05)
    assert "signature" not in str(timed_out.value)
    assert "signature_missing" not in caplog.text


async def test_a_memory_bus_is_not_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    bus = MemoryTransport()
    with caplog.at_level(logging.WARNING, logger="tidegate.client.client"):
        async with ScriptedTidegate(bus, lambda p: ("allow", "ok")), Tidegate(transport=bus):
            pass
    assert "signature_missing" not in caplog.text


async def test_a_start_that_fails_after_connecting_disconnects() -> None:
    bus = Unanswered(fail_end=True)
    with pytest.raises(RuntimeError, match="topics missing"):
        async with unanswered_client(bus):
            pass
    assert (bus.started, bus.stopped) == (1, 1)


class FakeProducer:
    """aiokafka's producer when the broker is not reached (or refuses the login): its start fails."""

    made: list[FakeProducer] = []

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.stopped = False
        FakeProducer.made.append(self)

    async def start(self) -> None:
        raise KafkaConnectionError(f"Unable to bootstrap from [{self.options['bootstrap_servers']}]")

    async def stop(self) -> None:
        self.stopped = True


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({}, r"Kafka at 127\.0\.0\.1:19092 not reached without a login .*TIDEGATE_CLIENT_SASL_USERNAME=agent"),
        (
            {"sasl_username": "agent", "sasl_password": SecretStr("wrong")},
            r"Kafka at 127\.0\.0\.1:19092 not reached as SASL user 'agent' \(SASL_PLAINTEXT, SCRAM-SHA-512\).*SASL_PASSWORD",
        ),
    ],
)
async def test_a_broker_not_reached_is_named_with_the_login_tried_and_nothing_is_left_open(
    settings: dict[str, Any], says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    FakeProducer.made.clear()
    for name in ("TIDEGATE_CLIENT_KAFKA_BOOTSTRAP", "TIDEGATE_KAFKA_BOOTSTRAP"):  # the default address, whatever this machine sets
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(transport_module, "AIOKafkaProducer", FakeProducer)
    bus = KafkaTransport(ClientSettings(**settings))
    with pytest.raises(ConnectionError, match=says) as failed:
        async with Tidegate(ClientSettings(**settings), transport=bus, trust=DeploymentKeys().trust()):
            pass
    assert "wrong" not in str(failed.value)
    assert [p.stopped for p in FakeProducer.made] == [True]


async def test_a_refused_login_names_the_mechanism_tried_and_the_login_file_that_names_the_right_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator's script logs in as admin with admin.properties' password after `infra rotate-login admin` moved it to
    SCRAM-SHA-256: the client tried SCRAM-SHA-512; the error says so, the setting that changes it, and the file to read."""
    monkeypatch.setenv("TIDEGATE_KAFKA_CREDENTIALS_DIR", str(tmp_path))
    monkeypatch.setattr(transport_module, "AIOKafkaProducer", FakeProducer)
    settings = ClientSettings(sasl_username="admin", sasl_password=SecretStr("rotated"))
    with pytest.raises(ConnectionError) as failed:
        async with Tidegate(settings, transport=KafkaTransport(settings), trust=DeploymentKeys().trust()):
            pass
    said = str(failed.value)
    assert "SCRAM-SHA-512 was tried" in said
    assert "TIDEGATE_CLIENT_SASL_MECHANISM" in said
    assert str(tmp_path / "admin.properties") in said
    assert "rotated" not in said


class StuckConsumer:
    """aiokafka's consumer still connecting when the client is stopped (an MCP client that hung up at once)."""

    made: list[StuckConsumer] = []

    def __init__(self, **options: Any) -> None:
        self.stopped = False
        StuckConsumer.made.append(self)

    async def start(self) -> None:
        await asyncio.Event().wait()

    async def stop(self) -> None:
        self.stopped = True


async def test_a_reader_stopped_while_it_connects_closes_its_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    StuckConsumer.made.clear()
    monkeypatch.setattr(transport_module, "AIOKafkaConsumer", StuckConsumer)

    async def read() -> None:
        async for _ in KafkaTransport(ClientSettings()).read(("actions.decided",), None):
            pass

    reader = asyncio.create_task(read())
    while not StuckConsumer.made:
        await asyncio.sleep(0)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert [c.stopped for c in StuckConsumer.made] == [True]


async def test_tainted_args_given_as_one_string_is_refused_not_split_into_characters() -> None:
    bus = MemoryTransport()
    async with ScriptedTidegate(bus, lambda p: ("allow", "ok")) as scripted, Tidegate(transport=bus) as tg:
        with pytest.raises(TypeError, match="tainted_args is a list of arg paths"):
            await tg.propose("tag_ticket", {"ticket_id": "T-2"}, tainted_args="ticket_id")
        assert scripted.proposals == []


async def test_proposing_before_start_is_a_runtime_error_that_says_how() -> None:
    with pytest.raises(RuntimeError, match="async with Tidegate"):
        await Tidegate(transport=MemoryTransport()).propose("tag_ticket", {})


async def test_a_nan_arg_is_named() -> None:
    bus = MemoryTransport()
    async with ScriptedTidegate(bus, lambda p: ("allow", "ok")) as scripted, Tidegate(transport=bus) as tg:
        with pytest.raises(ValueError, match=r"arg refund\.lines\[1\] is nan: Tidegate refuses NaN"):
            await tg.propose("issue_refund", {"refund": {"lines": [1.0, float("nan")]}})
        assert scripted.proposals == []


@pytest.mark.parametrize("variable", ["TIDEGATE_CLIENT_SERVICE_KEYS_DIR", "TIDEGATE_CLIENT_STATE_DIR"])
def test_an_empty_directory_setting_is_refused_not_read_as_the_working_directory(variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, "")
    with pytest.raises(ValidationError, match="is empty"):
        ClientSettings()


def test_the_default_directories_are_the_checkouts_wherever_the_client_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from servicekit import REPO_ROOT

    monkeypatch.chdir(tmp_path)
    settings = ClientSettings()
    assert settings.service_keys_dir == REPO_ROOT / ".tidegate" / "keys"  # where the services keep theirs by default
    assert settings.state_dir == REPO_ROOT / ".tidegate" / "client"
