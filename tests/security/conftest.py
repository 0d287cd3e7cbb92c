"""Security tests act as the attacker against the real services (plain HTTP and Kafka clients, the real database).

The approval service's harness (tests/integration/approval) starts the service and plays the policy service.
"""

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from servicekit import ADMIN, KitSettings, kafka_options

sys.path.insert(0, str(Path(__file__).parents[1] / "integration" / "approval"))

from approval_harness import http, start_approval

__all__ = ["http", "producer", "start_approval"]


@pytest.fixture
async def producer(kit: KitSettings) -> AsyncIterator[AIOKafkaProducer]:
    """Whoever writes the genuine records, as the bus's admin (a test's own fixture of this name takes its place)."""
    prod = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN), acks="all", enable_idempotence=True)
    await prod.start()
    try:
        yield prod
    finally:
        await prod.stop()
