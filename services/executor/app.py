"""The one wiring point of the executor service: settings, then dependencies, then subscribers."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx

from connectors import ConnectorAccess, GrantStore, GrantVerifier, PgGrantStore, Vault
from servicekit import (
    ControlState,
    Keyring,
    KitSettings,
    ServiceProcess,
    ToolCatalog,
    deployment_authority,
    ensure_topics,
    kafka_options,
    service_bus,
    service_key,
)
from servicekit.bus import Bus
from servicekit.catalog_checks import unloadable_entrypoints
from servicekit.clock import judging_clock
from servicekit.db import open_pool, unopened_pool
from servicekit.dbroles import service_database_url
from services.executor import handlers
from services.executor.claims import ClaimStore, PgClaimStore
from services.executor.credentials import CredentialStore
from services.executor.executor import Executor
from services.executor.restored import check_not_behind
from services.executor.settings import ExecutorSettings
from services.executor.tools import ConnectorTools, HttpTools, PythonTools, ToolInvokers, TopicTools
from services.executor.undo import InMemoryUndoStore, PgUndoStore, UndoStore, undo_seals

__all__ = ["NAME", "ExecutorDeps", "ExecutorProcess", "build"]

NAME = "executor"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExecutorDeps:
    """Where the executor claims action ids and reads connector grants; tests pass the in-memory twins.

    Attributes:
        claims: One row per action id claimed.
        grants: The tenants' connector grants.
        tools_pool: The database the in-process tools work in (opened and closed with the service), if any.
        undo: Where the prior states and undo plans of succeeded calls are kept.
    """

    claims: ClaimStore
    grants: GrantStore
    tools_pool: asyncpg.Pool | None = None
    undo: UndoStore = field(default_factory=InMemoryUndoStore)


@dataclass
class ExecutorProcess(ServiceProcess):
    """The running executor; `executor` performs the calls, for tests and tooling that inspect it."""

    executor: Executor = field(kw_only=True)


def build(
    kit: KitSettings | None = None,
    settings: ExecutorSettings | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    deps: ExecutorDeps | None = None,
) -> ExecutorProcess:
    """Assemble the executor: every dependency once, the PostgreSQL claims and grants unless `deps` gives others.

    Args:
        kit: Where the bus, database, keys and tool catalog are.
        settings: The executor's own settings.
        environ: Where `TIDEGATE_CREDENTIAL_*` secrets are read from (the process environment by default).
        deps: The stores to use instead of the service's schema (no pool is made then).
    """
    kit = kit or KitSettings()
    settings = settings or ExecutorSettings()
    catalog = ToolCatalog.load(*kit.tool_dirs)
    for warning in unloadable_entrypoints(catalog.tools):  # said at start, not first at a call (connectors probe F13)
        log.warning("executor: %s", warning)
    pool = None
    role = settings.tools_database_role
    authority = deployment_authority(kit, catalog)
    key = service_key(kit, NAME)
    if deps is None:
        # Each call in flight holds its claim's connection and may borrow one more for the tool.
        size = max(kit.db_pool_max, 2 * settings.concurrency + 2)
        # Claims hold session advisory locks, its only session state: a released connection ends them, in one statement.
        pool = ServiceProcess.pool_of(kit, NAME, size, session_state="advisory_locks")
        owner = f"{socket.gethostname()}:{os.getpid()}"
        deps = ExecutorDeps(
            claims=PgClaimStore(pool, owner=owner, prefix=kit.topic_prefix),
            grants=PgGrantStore(pool),
            undo=PgUndoStore(pool, undo_seals(key, authority)),  # undo records carry the executor's signature
            # In-process tools (the demo's systems of record) work in their own schemas as a role of their own. They keep no
            # session state beyond a transaction (`ToolContext.pool`), so a released connection needs no reset round trip.
            tools_pool=unopened_pool(service_database_url(kit, role), max_size=settings.concurrency + 2, reset_session=False)
            if role
            else None,
        )
    bus = service_bus(kit, NAME, signer=key, authority=authority)
    control = ControlState()
    http_client = httpx.AsyncClient(limits=httpx.Limits(max_connections=settings.http_max_connections))
    topic_tools = TopicTools(bus.publish, kit.topic_prefix)
    authority.on_refused = topic_tools.refused  # a reply refused for its signature: the call waiting on it says so when it times out
    python_tools = PythonTools()
    vault = Vault(settings.connector_keys_dir or kit.keys_dir)
    # A grant is trusted only under the signature of an operator on the allow-list (a file, never the executor's database).
    # ...and only if it is the grant an operator made current last on `control` (an older signed row put back is refused).
    verifier = GrantVerifier(authority, pins=lambda tenant, connector: control.grants.get((tenant, connector)),
                             require_pin=settings.require_pinned_grants)  # fmt: skip
    connector_tools = ConnectorTools(ConnectorAccess(deps.grants, vault, verifier), python_tools)

    def kill_reason(tenant_id: str, tool: str) -> str | None:
        switch = control.killed(tenant_id, tool)
        return None if switch is None else f"{switch.data.reason or 'no reason given'} (set by {switch.data.set_by})"

    executor = Executor(
        catalog=catalog,
        clock=_judging_clock(bus),
        keyring_loader=lambda: Keyring.load(kit.keys_dir, settings.policy_key_name),
        claims=deps.claims,
        invokers=ToolInvokers(python=python_tools, http=HttpTools(http_client), topic=topic_tools, connector=connector_tools),
        credentials=CredentialStore.load(settings.credentials_file, os.environ if environ is None else environ),
        out=bus,
        killed=kill_reason,
        authority=authority,  # a kept result goes out again only as the executor's own, signed for that very action
        context_pool=deps.tools_pool,
        ready=lambda: bus.wait_caught_up("control"),
        undo=deps.undo,
        stopping=bus.stopping,
        max_result_bytes=_result_bound(kit, settings),
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
    tools_pool = deps.tools_pool
    opened = False

    async def begin(_: ServiceProcess) -> None:
        nonlocal opened
        if pool is not None:  # a database restored from a backup forgot claims: nothing runs until `tidegate db catch-up`
            await check_not_behind(pool, kit.kafka_bootstrap, kit.topic_prefix, authority, client_options=kafka_options(kit, NAME))
        if tools_pool is not None:
            opened = True  # closed at stop from now on, whether or not it opens
            await open_pool(tools_pool, service_database_url(kit, role or NAME))
        if topic_tool_names:
            await ensure_topics(
                kit.kafka_bootstrap,
                kit.topic_prefix,
                [f"tools.{t}.{end}" for t in topic_tool_names for end in ("requests", "replies")],
                client_options=kafka_options(kit, NAME),
                grant=False,  # the executor may not create topics or ACLs: `tidegate topics` / `infra up` does
                partitions=kit.topic_partitions,
            )
        vault.ensure()  # the credential key pair is made on the executor's first start
        # Publishing needs the producer before consumers start: settle what a dead process left mid-call.
        await bus.producer.start()
        await executor.settle_interrupted()

    async def close(_: ServiceProcess) -> None:
        await http_client.aclose()
        if tools_pool is not None and opened:  # not opened when the start stopped before (`check_not_behind`)
            await tools_pool.close()

    return ExecutorProcess.of(
        kit,
        NAME,
        bus,
        pool=pool,
        migrations=Path(__file__).parent / "migrations",
        control=control,
        on_start=[begin],
        on_stop=[close],
        executor=executor,
    )


def _judging_clock(bus: Bus) -> Callable[[], datetime]:
    """The time an authorization's expiry is judged at: this host's, or the broker's as its producer last read it when later.

    An executor whose clock is behind would otherwise carry out an authorization already expired at the policy's and the
    broker's time (docs/reliability.md, "A clock that is off"); a stand-in producer in tests reads no broker time.
    """
    return judging_clock(bus.producer)


def _result_bound(kit: KitSettings, settings: ExecutorSettings) -> int:
    """`max_result_bytes`, kept 64 KiB under what the deployment's consumers parse (`TIDEGATE_MAX_VALUE_BYTES`, perhaps lowered)."""
    ceiling = max(kit.max_value_bytes - 64 * 1024, kit.max_value_bytes // 2)
    if settings.max_result_bytes > ceiling:
        log.warning(
            "TIDEGATE_EXECUTOR_MAX_RESULT_BYTES=%d leaves too little room under TIDEGATE_MAX_VALUE_BYTES=%d: using %d",
            settings.max_result_bytes,
            kit.max_value_bytes,
            ceiling,
        )
        return ceiling
    return settings.max_result_bytes
