"""The kit's one producer (`servicekit.Producer`): how it connects, logs its bus's other clients in, and refuses a send before start."""

from __future__ import annotations

from typing import Any

import pytest

from servicekit import producer as producer_module
from servicekit.producer import PRODUCER_BATCH_BYTES, Producer, servers


class _Client:
    """Stands in for aiokafka's producer: keeps its options and how often it was started and stopped."""

    made: list[_Client] = []

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.starts = self.stops = 0
        _Client.made.append(self)

    async def start(self) -> None:
        self.starts += 1

    async def stop(self) -> None:
        self.stops += 1


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> list[_Client]:
    _Client.made = []
    monkeypatch.setattr(producer_module, "AIOKafkaProducer", _Client)
    return _Client.made


LOGIN = {
    "security_protocol": "SASL_PLAINTEXT",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_plain_username": "policy",
    "sasl_plain_password": "pw",
}


async def test_the_producer_is_idempotent_acks_all_logged_in_and_splits_a_clusters_bootstrap_list(clients: list[_Client]) -> None:
    producer = Producer(" a:1, b:2 ,", "policy", **LOGIN, request_timeout_ms=5_000)
    await producer.start()
    await producer.start()  # a second start (the executor connects before its consumers run) connects nothing again
    [client] = clients
    assert client.starts == 1
    assert client.options == {
        "bootstrap_servers": ["a:1", "b:2"],
        "client_id": "tidegate-policy",
        "acks": "all",
        "enable_idempotence": True,
        "max_batch_size": PRODUCER_BATCH_BYTES,
        **LOGIN,
        "request_timeout_ms": 5_000,
    }
    await producer.stop()
    await producer.stop()
    assert client.stops == 1


def test_the_bus_other_clients_take_the_producers_login_and_nothing_else() -> None:
    assert Producer("a:1", "policy", **LOGIN, request_timeout_ms=5_000).login == LOGIN
    assert Producer("a:1", "policy").login == {}  # a broker without authentication
    assert servers("a:1,,b:2 ") == ["a:1", "b:2"]


async def test_a_send_before_start_is_refused_with_the_service_named() -> None:
    with pytest.raises(RuntimeError, match="policy: the producer is not started"):
        await Producer("a:1", "policy").send("t", b"{}", key=None, headers=[])
    assert not Producer("a:1", "policy").dead()  # not started is not dead: nothing ended
