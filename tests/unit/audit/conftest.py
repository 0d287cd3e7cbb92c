"""Fixtures of the audit's unit tests: observed records from the contract's sample events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import schemas as s
from schemas.examples import sample_events
from services.audit.records import observe
from services.audit.rows import Observed

PREFIX = "tidegate."


def _observe(
    topic: str, value: bytes | None, *, partition: int = 0, offset: int = 0, key: bytes | None = None, headers: Any = ()
) -> Observed:
    return observe(
        topic=PREFIX + topic, partition=partition, offset=offset, timestamp_ms=1_790_000_000_000 + offset, timestamp_type=0,
        key=key, value=value, headers=list(headers), prefix=PREFIX,
    )  # fmt: skip


@pytest.fixture
def make() -> Callable[..., Observed]:
    """`make(topic, value, partition=, offset=, key=, headers=)` → an observed record."""
    return _observe


@pytest.fixture
def sample_records() -> list[Observed]:
    """Every sample event of the contract, observed on its topic, in order, one partition per topic."""
    offsets: dict[str, int] = {}
    out = []
    for topic, event in sample_events():
        offset = offsets.get(topic, 0)
        offsets[topic] = offset + 1
        headers = [(k, v.encode()) for k, v in s.headers_for(event).items()]
        out.append(_observe(topic, s.encode(event), offset=offset, key=event.key, headers=headers))
    return out
