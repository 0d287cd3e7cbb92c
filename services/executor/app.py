"""The one wiring point of the executor service: settings, then dependencies, then subscribers."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path

import httpx

import systems
from connectors import ConnectorAccess, InMemoryGrantStore, PgGrantStore, Vault
from servicekit import (
    Bus,
    ControlState,
    Keyring,
    KitSettings,
    ServiceProcess,
    ToolCatalog,
    configure_logging,
    deployment_authority,
    ensure_topics,
    install_tracing,
    kafka_options,
    make_broker,
    service_key,
)
from services.executor import handlers
from services.executor.claims import InMemoryClaimStore, PgClaimStore
from services.executor.credentials import CredentialStore
from services.executor.executor import Executor
from services.executor.settings import ExecutorSettings
from services.executor.tools import ConnectorTools, HttpTools, PythonTools, ToolInvokers, TopicTools
from services.executor.undo import PgUndoStore

__all__ = ["NAME", "build", "main"]

NAME = "executor"
log = logging.getLogger(__name__)


def build(
    kit: KitSettings | None = None, settings: ExecutorSettings | None = None, environ: Mapping[str, str] | None = None
) -> ServiceProcess:
    """Assemble the executor service from its settings.

    Args:
        kit: Where the bus, database, keys and tool catalog are.
        settings: The executor's own settings.
        environ: Where `TIDEGATE_CREDENTIAL_*` secrets are read from (the process environment by default).
    """
    kit = kit or KitSettings()
    settings = settings or ExecutorSettings()
    catalog = ToolCatalog.load(kit.tools_dir)
    bus = Bus(
        make_broker(kit.kafka_bootstrap, NAME, **kafka_options(kit, NAME)),
        NAME,
        kit.kafka_bootstrap,
        kit.topic_prefix,
        bounds=kit.bounds,
        signer=service_key(kit, NAME),
        authority=deployment_authority(kit, catalog),
    )
    control = ControlState()
    http_client = httpx.AsyncClient(limits=httpx.Limits(max_connections=settings.http_max_connections))
    topic_tools = TopicTools(bus.publish, kit.topic_prefix)
    python_tools = PythonTools()
    vault = Vault(settings.connector_keys_dir or kit.keys_dir)
    # Grants are read from PostgreSQL once the pool exists (on start), like the claims.
    connector_tools = ConnectorTools(ConnectorAccess(InMemoryGrantStore(), vault), python_tools)

    def kill_reason(tenant_id: str, tool: str) -> str | None:
        switch = control.killed(tenant_id, tool)
        return None if switch is None else f"{switch.data.reason or 'no reason given'} (set by {switch.data.set_by})"

    executor = Executor(
        catalog=catalog,
        keyring_loader=lambda: Keyring.load(kit.keys_dir, settings.policy_key_name),
        claims=InMemoryClaimStore(),  # replaced by the PostgreSQL store once the pool exists (on start)
        invokers=ToolInvokers(python=python_tools, http=HttpTools(http_client), topic=topic_tools, connector=connector_tools),
        credentials=CredentialStore.load(settings.credentials_file, os.environ if environ is None else environ),
        publish=bus.publish,
        killed=kill_reason,
        ready=lambda: bus.wait_caught_up("control"),
    )
    # Tool calls mostly wait (PostgreSQL, HTTP, outside services): run different tasks' calls at once.
    bus.consume(
        "actions.authorized",
        handlers.on_authorized(executor),
        group_id=f"{kit.topic_prefix}executor",
        concurrency=settings.concurrency,
        max_records=500,
    )
    bus.consume("control", control.apply, group_id=None)
    topic_tool_names = sorted(name for name, spec in catalog.items() if spec.kind == "topic")
    for tool in topic_tool_names:
        # Every process reads the replies from the end: a reply matters only to the call waiting for it now.
        bus.consume(f"tools.{tool}.replies", handlers.on_tool_reply(topic_tools), group_id=None, from_latest=True)

    async def connect(proc: ServiceProcess) -> None:
        assert proc.pool is not None
        if settings.install_systems:  # the in-process tools work in the systems' schemas as a role of their own
            executor.context_pool = await systems.connect(kit.service_database_url("systems"), max_size=settings.concurrency + 2)
        if topic_tool_names:
            await ensure_topics(
                kit.kafka_bootstrap,
                kit.topic_prefix,
                [f"tools.{t}.{end}" for t in topic_tool_names for end in ("requests", "replies")],
                client_options=kafka_options(kit, NAME),
                grant=False,  # the executor may not create topics or ACLs: `tidegate topics` / `infra up` does
            )
        executor.claims = PgClaimStore(proc.pool, owner=f"{socket.gethostname()}:{os.getpid()}", prefix=kit.topic_prefix)
        executor.undo = PgUndoStore(proc.pool)
        vault.ensure()  # the credential key pair is made on the executor's first start
        connector_tools.access.store = PgGrantStore(proc.pool)
        # Publishing needs the producer before consumers start: settle what a dead process left mid-call.
        await bus.broker.connect()
        await executor.settle_interrupted()

    async def close(_: ServiceProcess) -> None:
        await http_client.aclose()
        if executor.context_pool is not None:
            await executor.context_pool.close()

    proc = ServiceProcess(
        name=NAME,
        stall_after_s=kit.stall_after_s,
        handler_limit_s=kit.handler_limit_s,
        bus=bus,
        database_url=kit.service_database_url(NAME),
        schema=NAME,
        migrations=Path(__file__).parent / "migrations",
        control=control,
        metrics_port=kit.metrics_port,
        # Each call in flight holds its claim's connection and may borrow one more for the tool.
        pool_max=max(kit.db_pool_max, 2 * settings.concurrency + 2),
        ready_dir=kit.ready_dir,
        on_start=[connect],
        on_stop=[close],
    )
    proc.executor = executor  # type: ignore[attr-defined]  # for tests and tooling that inspect the running executor
    return proc


def main() -> None:
    """Run the executor service until SIGTERM."""
    kit = KitSettings()
    configure_logging(kit.log_level)
    install_tracing(NAME, otlp_endpoint=kit.otlp_endpoint)
    asyncio.run(build(kit).run_until_signalled())
