"""Fixtures of the reliability tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from reliability_helpers import BatchProducer

from servicekit import KitSettings


@pytest.fixture
async def batch_producer(kit: KitSettings) -> AsyncIterator[BatchProducer]:
    producer = BatchProducer(kit)
    await producer.producer.start()
    yield producer
    await producer.producer.stop()
