"""Fixtures every test layer shares: the infrastructure (one fixture, two providers), isolation, waiting."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaProducer
from prefix_drops import PrefixDrops, drop_logged

from servicekit import ADMIN, REPO_ROOT, KitSettings, kafka_options

T = TypeVar("T")

# A developer's shell may export what their own deployment serves (docs/integrations.md tells an integrator to set these):
# the tests' services and catalogs are their own, and a tool folder of theirs made the governed-login tests ask the
# broker for topics no test login may write (TopicAuthorizationFailedError). The infrastructure's ports stay as exported.
for _deployment_own in ("TIDEGATE_EXTRA_TOOLS_DIRS", "TIDEGATE_MCP_EXTRA_TOOLS_DIRS"):
    os.environ.pop(_deployment_own, None)


@dataclass(frozen=True)
class Infra:
    """Where the real Kafka and PostgreSQL of this test session are."""

    kafka_bootstrap: str
    database_url: str  # the operator's (migrator's) role, on this session's own database (its password from the passfile)
    admin_database_url: str  # a superuser on the same database (what an attacker with DB access has; local: over the socket)
    provider: str
    db_credentials_dir: Path  # each service's own login on that database (`<service>.json`)
    role_prefix: str  # this session's roles: `<prefix>planner`, …, `<prefix>owner`


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
    from tidegate.database import local_superuser_url

    kit = KitSettings()
    # `running`: use the Kafka and PostgreSQL already at the settings' addresses (another checkout's, say).
    running = os.environ.get("TIDEGATE_TEST_INFRA") == "running"
    status = None if running else subprocess.run(["bash", str(REPO_ROOT / "infra" / "infra.sh"), "status"], capture_output=True)
    if status is not None and status.returncode != 0:
        subprocess.run(["bash", str(REPO_ROOT / "infra" / "infra.sh"), "up"], check=True)
    # The operator logs in with the password `infra up` generated (its passfile); the superuser over the socket only.
    yield kit.kafka_bootstrap, kit.operator_database_url, local_superuser_url(kit)


def _container_infra() -> Iterator[tuple[str, str, str]]:
    from testcontainers.community.kafka import KafkaContainer
    from testcontainers.community.postgres import PostgresContainer

    superuser, operator = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    with (
        KafkaContainer("apache/kafka:4.1.1").with_kraft() as kafka,
        PostgresContainer("postgres:15", username="postgres", password=superuser, driver=None) as pg,
    ):
        host, port = pg.get_container_host_ip(), pg.get_exposed_port(5432)
        admin = f"postgresql://postgres:{superuser}@{host}:{port}/postgres"
        subprocess.run(["psql", admin, "-c", f"CREATE ROLE tidegate LOGIN PASSWORD '{operator}' CREATEROLE"], check=True)
        yield kafka.get_bootstrap_server(), f"postgresql://tidegate:{operator}@{host}:{port}/tidegate", admin


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    """Real Kafka and PostgreSQL: testcontainers when a Docker engine answers, the project's own otherwise.

    Each session gets a fresh database owned by the operator's role, migrated as `tidegate db migrate`
    does, with roles of its own (roles are cluster-wide; sessions of several checkouts share the
    cluster). Every service started by a test logs in as its own role: `TIDEGATE_DB_CREDENTIALS_DIR`
    points at the session's logins, for settings built in-process and for subprocesses alike.
    Database and roles are dropped at the end.
    """
    from servicekit.dbroles import owner_role, service_role, with_database
    from tidegate.database import SCHEMAS, migrate

    provider = "docker" if _docker_reachable() else "local"
    source = _container_infra() if provider == "docker" else _local_infra()
    bootstrap, operator_url, admin_url = next(source)
    session = uuid.uuid4().hex[:8]
    dbname = f"tidegate_test_{session}"
    role_prefix = f"tidegate_t{session}_"
    credentials = tmp_path_factory.mktemp("db-credentials")
    subprocess.run(["psql", admin_url, "-qc", f"CREATE DATABASE {dbname} OWNER tidegate"], check=True)
    roles = [owner_role(role_prefix), *dict.fromkeys(service_role(s.user, role_prefix) for s in SCHEMAS)]
    previous = os.environ.get("TIDEGATE_DB_CREDENTIALS_DIR")
    os.environ["TIDEGATE_DB_CREDENTIALS_DIR"] = str(credentials)
    try:
        database_url = with_database(operator_url, dbname)
        kit = KitSettings(database_url=database_url, db_credentials_dir=credentials)
        asyncio.run(migrate(kit, role_prefix=role_prefix))
        yield Infra(bootstrap, database_url, with_database(admin_url, dbname), provider, credentials, role_prefix)
    finally:
        if previous is None:
            os.environ.pop("TIDEGATE_DB_CREDENTIALS_DIR", None)
        else:
            os.environ["TIDEGATE_DB_CREDENTIALS_DIR"] = previous
        subprocess.run(["psql", admin_url, "-qc", f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)"], check=False)
        drop = "; ".join(f"DROP ROLE IF EXISTS {role}" for role in roles)
        subprocess.run(["psql", admin_url, "-qc", drop], check=False)
        source.close()


@pytest.fixture(autouse=True)
def _no_payee_paid_today(request: pytest.FixtureRequest) -> None:
    """A test on the real database starts with no payee paid today, as it starts with topics of its own.

    The default pack bounds what a tenant pays one payee over 24 hours in any task (`policy.payouts`): the tests of a
    session share its database and the pack's tenants and payees, so one test's refunds would count in the next one's.
    """
    if "infra" not in request.fixturenames:
        return
    infra: Infra = request.getfixturevalue("infra")

    async def forget() -> None:
        import asyncpg

        conn = await asyncpg.connect(infra.admin_database_url)
        try:
            await conn.execute("DELETE FROM policy.payouts")
        finally:
            await conn.close()

    asyncio.run(forget())


@pytest.fixture(autouse=True)
def _alone_after_every_drop(request: pytest.FixtureRequest) -> None:
    """A test marked `alone` (it changes or reads the whole broker) starts once every earlier test's prefix is dropped."""
    if "infra" in request.fixturenames and request.node.get_closest_marker("alone") is not None:
        request.getfixturevalue("prefix_drops").wait()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A topic prefix of this test's own, so that tests never see each other's events (made ahead for a test that asks for `topics`)."""
    if "topics" in request.fixturenames and (made_ahead := request.getfixturevalue("prefix_drops").take()) is not None:
        return str(made_ahead)
    return f"test-{uuid.uuid4().hex[:10]}."


@pytest.fixture(scope="session")
def catalog_topics() -> list[str]:
    """The catalog's topic names (those of its Kafka-served tools too), read once a session: the catalog is the checkout's."""
    from servicekit import ToolCatalog, catalog_topic_names

    return catalog_topic_names([t.name for t in ToolCatalog.load(KitSettings().tools_dir).values() if t.kind == "topic"])


_made_ahead: list[Callable[[], None]] = []  # while a session's `prefix_drops` is open: starts making the next test's prefix


@pytest.fixture(scope="session")
def prefix_drops(infra: Infra, catalog_topics: list[str]) -> Iterator[PrefixDrops]:
    """Where the `topics` fixture hands its prefix to be dropped and takes one made ahead (tests/prefix_drops.py).

    Every prefix is dropped by the session's end.
    """
    drops = PrefixDrops()
    _made_ahead.append(lambda: drops.prepare(infra.kafka_bootstrap, catalog_topics, kafka_options(KitSettings(), ADMIN)))
    yield drops
    _made_ahead.clear()
    drops.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Note the test that comes next: while this one runs, the next one's topics are made (`pytest_runtest_call`)."""
    item.stash[_next_item] = nextitem
    yield


_next_item = pytest.StashKey[pytest.Item | None]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """As a test starts, start making the next test's prefix if it asks for `topics`; never beside a test marked `alone`."""
    following = item.stash.get(_next_item, None)
    if not _made_ahead or following is None or "topics" not in getattr(following, "fixturenames", ()):
        return
    if item.get_closest_marker("alone") is None and following.get_closest_marker("alone") is None:
        _made_ahead[0]()


@pytest.fixture
async def topics(
    infra: Infra, prefix: str, catalog_topics: list[str], prefix_drops: PrefixDrops, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """Every catalog topic (and those of the catalog's Kafka-served tools) created under this test's prefix, with its ACLs.

    Returns the prefix. Made while the test before ran, when it could be (`pytest_runtest_call`); deleted afterwards, while
    the next test runs (tests/prefix_drops.py); a test marked `alone` (it changes the whole broker) drops its own before it ends.
    """
    from servicekit import ensure_topics

    if not prefix_drops.made(prefix):
        await ensure_topics(infra.kafka_bootstrap, prefix, catalog_topics)
    yield prefix
    if request.node.get_closest_marker("alone") is not None:
        await delete_prefix_topics(infra.kafka_bootstrap, prefix)
    else:
        prefix_drops.submit(infra.kafka_bootstrap, prefix, kafka_options(KitSettings(), ADMIN))


async def delete_prefix_topics(bootstrap: str, prefix: str) -> None:
    """Drop every topic under `prefix` and the rights granted on it (`servicekit.drop_prefix`); a failure is logged, never raised.

    Tests leave thousands of partitions otherwise, which slow Kafka's restarts, and their rights would
    stay on the broker for good.
    """
    await drop_logged(bootstrap, prefix)


@pytest.fixture
def kit(infra: Infra, topics: str, tmp_path: Any) -> KitSettings:
    """Kit settings pointing at the real infrastructure, this test's prefix and its own key directory (made, as `keys init` would)."""
    (tmp_path / "keys").mkdir(exist_ok=True)  # a service refuses a keys folder that is not there
    return KitSettings(
        kafka_bootstrap=infra.kafka_bootstrap,
        database_url=infra.database_url,
        db_credentials_dir=infra.db_credentials_dir,
        topic_prefix=topics,
        keys_dir=tmp_path / "keys",
    )


@pytest.fixture
async def producer(kit: KitSettings) -> AsyncIterator[AIOKafkaProducer]:
    """A raw producer as the bus's admin: lets tests put anything on the bus, valid or not (a folder's own `producer` takes its place)."""
    prod = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN), acks="all", enable_idempotence=True)
    await prod.start()
    try:
        yield prod
    finally:
        await prod.stop()


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
        if f"{os.sep}integration{os.sep}" in path or f"{os.sep}security{os.sep}" in path:  # security tests attack the real services
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
