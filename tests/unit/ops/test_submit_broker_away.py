"""The on-call's driver submitted tasks while the broker restarted: the last line each printed was
`producer: <aiokafka.producer.producer.AIOKafkaProducer object at 0x…>` (oncall F4).

`publish_events` started its producer outside its `try`: a broker not reached left it unclosed, and the garbage
collector's "Unclosed AIOKafkaProducer" report came after the CLI's own error line.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

import schemas as s
import tidegate.bus_client as bus_client
from servicekit import KitSettings


class UnreachableProducer:
    """An aiokafka producer whose broker is away: `start` fails; what was closed is recorded."""

    stopped: list[bool] = []

    def __init__(self, **_: Any) -> None:
        pass

    async def start(self) -> None:
        raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 23392)]")

    async def stop(self) -> None:
        self.stopped.append(True)


def test_a_producer_that_cannot_reach_the_broker_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bus_client, "AIOKafkaProducer", UnreachableProducer)
    UnreachableProducer.stopped = []
    data = s.TaskSubmittedData(task_id="t-away", tenant_id="acme", workflow="support_triage", input={}, requested_by="cli@localhost")
    task = s.TaskSubmitted.build(data, source="tidegate/cli")
    with pytest.raises(KafkaConnectionError):
        asyncio.run(bus_client.publish_events(KitSettings(kafka_bootstrap="127.0.0.1:23392"), [("tasks", task)]))
    assert UnreachableProducer.stopped == [True]
