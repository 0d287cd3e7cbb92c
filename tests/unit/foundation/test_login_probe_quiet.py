"""`tidegate infra rotate-login admin --finish` tries the former password to show it refused: that refusal is no error.

aiokafka logs every refused login at ERROR (`Unable connect to "127.0.0.1:…": [Error 58] SaslAuthenticationFailed …`):
the operator saw that raw line, then "the former … is refused", and read the check passing as a failure (upgrade21 F7).
A broker that is not reached is still logged: that is not the answer the check looks for.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaError

import servicekit.bus_rotation
from servicekit.bus_rotation import logs_in

AIOKAFKA = logging.getLogger("aiokafka.client")


class Broker:
    """aiokafka's admin client against a broker that refuses the login, or is not there."""

    def __init__(self, refuse: bool) -> None:
        self.refuse = refuse

    def __call__(self, **options: Any) -> Broker:
        return self

    async def start(self) -> None:
        if self.refuse:
            AIOKAFKA.error('Unable connect to "%s:%s": %s', "127.0.0.1", 1, "[Error 58] SaslAuthenticationFailed: Authentication failed")
            raise KafkaError("SaslAuthenticationFailed")
        AIOKAFKA.error('Unable connect to "%s:%s": %s', "127.0.0.1", 1, "[Errno 111] Connect call failed")
        raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")

    async def close(self) -> None:
        pass


async def test_a_refused_former_password_is_no_error_line(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(servicekit.bus_rotation, "AIOKafkaAdminClient", Broker(refuse=True))
    with caplog.at_level(logging.INFO):
        assert not await logs_in("127.0.0.1:1", "admin", "SCRAM-SHA-512", "former")
    assert [r.getMessage() for r in caplog.records] == []
    with caplog.at_level(logging.INFO):  # after the check, aiokafka's refusals are logged again (a service's, say)
        AIOKAFKA.error("Unable connect to node with id %s: %s", 1, "SaslAuthenticationFailed")
    assert len(caplog.records) == 1


async def test_a_broker_not_reached_is_still_logged(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(servicekit.bus_rotation, "AIOKafkaAdminClient", Broker(refuse=False))
    with caplog.at_level(logging.INFO):
        assert not await logs_in("127.0.0.1:1", "admin", "SCRAM-SHA-512", "former")
    assert any("Connect call failed" in r.getMessage() for r in caplog.records)
