"""A deployment sets how many partitions its topics spread over (`TIDEGATE_TOPIC_PARTITIONS`), on the real broker."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from servicekit import ADMIN, ensure_topics, kafka_options
from servicekit.settings import KitSettings
from tests.conftest import delete_prefix_topics


@pytest.fixture
async def fresh(infra: Any, prefix: str) -> AsyncIterator[str]:
    """A prefix none of whose topics exist yet; deleted afterwards."""
    yield prefix
    await delete_prefix_topics(infra.kafka_bootstrap, prefix)


async def counts(bootstrap: str, prefix: str, names: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_options(KitSettings(), ADMIN))
    await admin.start()
    try:
        described: Any = await admin.describe_topics([prefix + n for n in names])
        return {t["topic"].removeprefix(prefix): len(t["partitions"]) for t in described}
    finally:
        await admin.close()


NAMES = ["tasks", "actions.proposed", "control", "directory", "audit.checkpoints"]


async def test_the_topics_that_spread_load_get_the_deployments_count_and_the_ordered_ones_keep_one(infra: Any, fresh: str) -> None:
    created = await ensure_topics(infra.kafka_bootstrap, fresh, NAMES, partitions=2)
    assert sorted(created) == sorted(fresh + n for n in NAMES)
    assert await counts(infra.kafka_bootstrap, fresh, NAMES) == {
        "tasks": 2,
        "actions.proposed": 2,
        "control": 1,  # totally ordered: no setting spreads it
        "directory": 1,
        "audit.checkpoints": 1,
    }


async def test_unset_is_the_catalogs_six(infra: Any, fresh: str) -> None:
    await ensure_topics(infra.kafka_bootstrap, fresh, ["tasks", "control"])
    assert await counts(infra.kafka_bootstrap, fresh, ["tasks", "control"]) == {"tasks": 6, "control": 1}


async def test_an_existing_topic_keeps_its_count_and_the_difference_is_reported(
    infra: Any, fresh: str, caplog: pytest.LogCaptureFixture
) -> None:
    await ensure_topics(infra.kafka_bootstrap, fresh, ["tasks", "control"], partitions=2)
    with caplog.at_level(logging.WARNING, logger="servicekit.topics_admin"):
        created = await ensure_topics(infra.kafka_bootstrap, fresh, ["tasks", "control"], partitions=4)
    assert created == []
    # never changed behind the operator
    assert await counts(infra.kafka_bootstrap, fresh, ["tasks", "control"]) == {"tasks": 2, "control": 1}
    reported = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert reported == [f"{fresh}tasks exists with 2 partitions, not the 4 asked for: kept as it is (docs/operations.md, 'Partitions')"]
