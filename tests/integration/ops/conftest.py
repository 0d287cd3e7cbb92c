"""Fixtures of the ops integration tests: one recording of real traffic per module."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ops_traffic import Traffic, record_traffic

from servicekit import KitSettings
from tests.conftest import delete_prefix_topics


@pytest.fixture(scope="module")
def traffic(infra: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    """Real recorded traffic on a prefix of this module's own (built once; tests only read it)."""
    kit = KitSettings(
        kafka_bootstrap=infra.kafka_bootstrap,
        database_url=infra.database_url,
        topic_prefix=f"test-ops-{uuid.uuid4().hex[:8]}.",
        keys_dir=Path(tmp_path_factory.mktemp("ops-keys")),
    )
    yield asyncio.run(record_traffic(kit))
    asyncio.run(delete_prefix_topics(kit.kafka_bootstrap, kit.topic_prefix))  # the broker keeps every partition open: leave none behind


@pytest.fixture(scope="module")
def ops_login(infra: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Kafka credentials folder holding the `ops` login alone (a link to it): an operator's machine, with no `admin` login.

    A kit pointed at it (`kafka_credentials_dir`) can log in as nothing else: a client asking for another principal
    connects without a login and the broker refuses it.
    """
    folder = Path(tmp_path_factory.mktemp("ops-login"))
    (folder / "ops.properties").symlink_to(KitSettings().kafka_credentials_dir / "ops.properties")
    return folder
