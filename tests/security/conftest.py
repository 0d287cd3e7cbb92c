"""Security tests act as the attacker against the real services (plain HTTP and Kafka clients, the real database).

The approval service's harness (tests/integration/approval) starts the service and plays the policy service.
"""

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "integration" / "approval"))

from approval_harness import http, start_approval

from servicekit import KitSettings
from servicekit.dbroles import service_database_url

__all__ = ["approval_login", "http", "start_approval"]


@pytest.fixture
async def approval_login(kit: KitSettings) -> AsyncIterator[asyncpg.Connection]:
    """The approval service's own database login, exactly as the service builds its DSN: all its thief holds."""
    conn = await asyncpg.connect(service_database_url(kit, "approval"))
    yield conn
    await conn.close()
