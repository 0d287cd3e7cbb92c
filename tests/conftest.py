"""Fixtures every test layer shares: the infrastructure (one fixture, two providers), isolation, waiting."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from servicekit import REPO_ROOT, KitSettings

T = TypeVar("T")


@dataclass(frozen=True)
class Infra:
    """Where the real Kafka and PostgreSQL of this test session are."""

    kafka_bootstrap: str
    database_url: str  # the services' role, on this session's own database
    admin_database_url: str  # a superuser on the same database (what an attacker with DB access has)
    provider: str


def _docker_reachable() -> bool:
    if os.environ.get("TIDEGATE_TEST_INFRA", "auto") in ("local", "running"):
        return False
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:  # any failure means: no engine
        return False
    return True


def _local_infra() -> Iterator[tuple[str, str, str]]:
    kit = KitSettings()
    # `running`: use the Kafka and PostgreSQL already at the settings' addresses (another checkout's, say).
    running = os.environ.get("TIDEGATE_TEST_INFRA") == "running"
    status = None if running else subprocess.run(["bash", str(REPO_ROOT / "infra" / "infra.sh"), "status"], capture_output=True)
    if status is not None and status.returncode != 0:
        subprocess.run(["bash", str(REPO_ROOT / "infra" / "infra.sh"), "up"], check=True)
    base = kit.database_url.rsplit("/", 1)[0]
    admin = base.replace("tidegate:tidegate@", "postgres:postgres@")
    yield kit.kafka_bootstrap, base, admin


def _container_infra() -> Iterator[tuple[str, str, str]]:
    from testcontainers.community.kafka import KafkaContainer
    from testcontainers.community.postgres import PostgresContainer

    with (
        KafkaContainer("apache/kafka:4.1.1").with_kraft() as kafka,
        PostgresContainer("postgres:15", username="postgres", password="postgres", driver=None) as pg,
    ):
        host, port = pg.get_container_host_ip(), pg.get_exposed_port(5432)
        subprocess.run(
            [
                "psql",
                f"postgresql://postgres:postgres@{host}:{port}/postgres",
                "-c",
                "CREATE ROLE tidegate LOGIN PASSWORD 'tidegate' CREATEROLE",
            ],
            check=True,
        )
        yield kafka.get_bootstrap_server(), f"postgresql://tidegate:tidegate@{host}:{port}", f"postgresql://postgres:postgres@{host}:{port}"


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """Real Kafka and PostgreSQL: testcontainers when a Docker engine answers, the project's own otherwise.

    Each session gets a fresh database owned by the services' role, dropped at the end.
    """
    provider = "docker" if _docker_reachable() else "local"
    source = _container_infra() if provider == "docker" else _local_infra()
    bootstrap, base, admin_base = next(source)
    dbname = f"tidegate_test_{uuid.uuid4().hex[:8]}"
    subprocess.run(["psql", f"{admin_base}/postgres", "-qc", f"CREATE DATABASE {dbname} OWNER tidegate"], check=True)
    try:
        yield Infra(bootstrap, f"{base}/{dbname}", f"{admin_base}/{dbname}", provider)
    finally:
        subprocess.run(["psql", f"{admin_base}/postgres", "-qc", f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)"], check=False)
        source.close()


@pytest.fixture
def prefix() -> str:
    """A topic prefix of this test's own, so that tests never see each other's events."""
    return f"test-{uuid.uuid4().hex[:10]}."


@pytest.fixture
async def topics(infra: Infra, prefix: str) -> AsyncIterator[str]:
    """Every catalog topic created under this test's prefix; returns the prefix. The prefix's topics are deleted afterwards."""
    from servicekit import catalog_topic_names, ensure_topics

    await ensure_topics(infra.kafka_bootstrap, prefix, catalog_topic_names())
    yield prefix
    await delete_prefix_topics(infra.kafka_bootstrap, prefix)


async def delete_prefix_topics(bootstrap: str, prefix: str) -> None:
    """Delete every topic under `prefix` (tests leave thousands of partitions otherwise, and Kafka restarts slow down)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    try:
        await admin.start()
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    except Exception:  # cleanup must never fail a test
        pass
    finally:
        await admin.close()


@pytest.fixture
def kit(infra: Infra, topics: str, tmp_path: Any) -> KitSettings:
    """Kit settings pointing at the real infrastructure, this test's prefix and its own key directory."""
    return KitSettings(
        kafka_bootstrap=infra.kafka_bootstrap,
        database_url=infra.database_url,
        topic_prefix=topics,
        keys_dir=tmp_path / "keys",
    )


async def eventually(
    probe: Callable[[], Awaitable[T | None]] | Callable[[], T | None],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll `probe` until it returns something truthy, or fail after `timeout` seconds (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


@pytest.fixture
def wait_for() -> Callable[..., Awaitable[Any]]:
    """The `eventually` poller, as a fixture."""
    return eventually


@pytest.fixture(autouse=True)
def _no_real_model_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any unplanned real model call fails: tests drive litellm only against local stubs."""
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by folder so `-m integration` and `-m 'not integration'` select layers."""
    for item in items:
        path = str(item.fspath)
        if f"{os.sep}integration{os.sep}" in path or f"{os.sep}security{os.sep}" in path:
            item.add_marker(pytest.mark.integration)
        elif f"{os.sep}e2e{os.sep}" in path:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def stub() -> Iterator[Any]:
    """A local OpenAI-compatible HTTP stub (real HTTP, loopback) that litellm is pointed at instead of a provider."""
    import threading

    from llm_stub import Stub

    s = Stub()
    thread = threading.Thread(target=s.server.serve_forever, daemon=True)
    thread.start()
    yield s
    s.server.shutdown()
    s.server.server_close()
