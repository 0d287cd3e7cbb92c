"""A rotated Kafka login is retired by a password nobody holds, never deleted at the broker.

As the operator who rotated a login (`tidegate infra rotate-login <principal> --leaked`, or `--finish`) and then restarts
the broker, which docs/security/bus.md told them to do after a leak: a Kafka 4.1.1 broker restarted after a SCRAM
credential was deleted refused every SCRAM-SHA-512 login, admin's (so it never became ready) and every service's; only
`tidegate infra reset`, which loses every event, brought the bus back (/work/findings/sessions.md F2). The former
password must still be refused at once, which a retired credential (overwritten with an unknown password) gives too.
The broker here is a stand-in that keeps what each request asks; nothing reaches Kafka.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from servicekit import bus_rotation
from servicekit.bus_admin import _AlterScramStruct
from servicekit.bus_auth import client_properties, read_mechanism, read_password
from servicekit.private_files import write_private

BOOTSTRAP = "127.0.0.1:1"


class StandInBroker:
    """The SCRAM credentials a broker holds, altered by the kit's AlterUserScramCredentials requests; logins checked against them."""

    def __init__(self) -> None:
        self.credentials: dict[tuple[str, str], str] = {}  # (user, mechanism) → password
        self.deletions: list[Any] = []
        self.lag = 0  # logins answered from the credentials as they were before the last change (a broker slow to apply it)
        self._before: dict[tuple[str, str], str] = {}
        self._stale_answers = 0

    def admin(self, **_: Any) -> Any:
        broker = self

        class Admin:
            async def start(self) -> None:
                return None

            async def close(self) -> None:
                return None

            async def _send_request(self, request: Any) -> Any:
                sent = request.build(_AlterScramStruct)
                broker._before, broker._stale_answers = dict(broker.credentials), broker.lag
                broker.deletions.extend(sent.deletions)
                for name, mechanism, *_ in sent.deletions:
                    broker.credentials.pop((name, {1: "SCRAM-SHA-256", 2: "SCRAM-SHA-512"}[mechanism]), None)
                for name, (mechanism, password) in request.users.items():
                    broker.credentials[(name, mechanism)] = password

                class Response:
                    results: list[Any] = []

                return Response()

        return Admin()

    async def logs_in(self, bootstrap: str, principal: str, mechanism: str, password: str) -> bool:
        if self._stale_answers:
            self._stale_answers -= 1
            return self._before.get((principal, mechanism)) == password
        return self.credentials.get((principal, mechanism)) == password


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> StandInBroker:
    stand_in = StandInBroker()
    monkeypatch.setattr(bus_rotation, "AIOKafkaAdminClient", stand_in.admin)
    monkeypatch.setattr(bus_rotation, "logs_in", stand_in.logs_in)
    write_private(tmp_path / "admin.properties", client_properties("admin", "admin-pw", BOOTSTRAP))
    write_private(tmp_path / "agent.properties", client_properties("agent", "leaked-pw", BOOTSTRAP))
    stand_in.credentials[("agent", "SCRAM-SHA-512")] = "leaked-pw"
    return stand_in


def _login(folder: Path) -> tuple[str, str]:
    path = folder / "agent.properties"
    password = read_password(path)
    assert password is not None
    return read_mechanism(path), password


async def test_a_leaked_password_is_retired_not_deleted(broker: StandInBroker, tmp_path: Path) -> None:
    done = await bus_rotation.rotate_now(BOOTSTRAP, tmp_path, "agent")

    assert done.new_logs_in
    assert done.former_refused
    assert broker.deletions == []  # what locked every SCRAM-SHA-512 login out at the broker's next start
    assert not await broker.logs_in(BOOTSTRAP, "agent", "SCRAM-SHA-512", "leaked-pw")  # the thief: refused at once
    retired = broker.credentials[("agent", "SCRAM-SHA-512")]
    assert retired not in ("leaked-pw", _login(tmp_path)[1])  # a password nobody was given
    assert retired not in (tmp_path / "agent.properties").read_text()
    assert await broker.logs_in(BOOTSTRAP, "agent", *_login(tmp_path))


async def test_finishing_a_rotation_retires_the_former_login_without_deleting_it(broker: StandInBroker, tmp_path: Path) -> None:
    await bus_rotation.start_rotation(BOOTSTRAP, tmp_path, "agent")
    finished = await bus_rotation.finish_rotation(BOOTSTRAP, tmp_path, "agent")

    assert finished.former_refused
    assert finished.new_logs_in
    assert broker.deletions == []
    assert not await broker.logs_in(BOOTSTRAP, "agent", "SCRAM-SHA-512", "leaked-pw")
    assert await broker.logs_in(BOOTSTRAP, "agent", *_login(tmp_path))
    # The next rotation moves the login back to SCRAM-SHA-512, over the retired credential, with an overlap again.
    again = await bus_rotation.start_rotation(BOOTSTRAP, tmp_path, "agent")
    assert again.mechanism == "SCRAM-SHA-512"
    assert again.new_logs_in
    assert not again.former_refused


async def test_a_broker_slow_to_apply_a_new_password_is_not_reported_as_a_failed_rotation(
    broker: StandInBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the operator of a loaded broker: the credential the controller committed reaches the broker a moment later, and
    the one login the command tried right after setting it said "DOES NOT LOG IN" (exit 1) for a rotation that took."""
    monkeypatch.setattr(asyncio, "sleep", _no_wait)
    broker.lag = 3  # the first three logins after each change still see the credentials as they were
    done = await bus_rotation.rotate_now(BOOTSTRAP, tmp_path, "agent")

    assert done.new_logs_in
    assert done.former_refused
    assert done.settled_s > 0  # said: it took a while
    started = await bus_rotation.start_rotation(BOOTSTRAP, tmp_path, "agent")  # the new login is the one slow to show
    assert started.new_logs_in
    assert not started.former_refused


async def _no_wait(_: float) -> None:
    return None
