"""Fixtures of the executor's integration tests: signed authorizations, seeded systems, a results listener."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from signers import AdminBus, SigningBus

import schemas as s
from servicekit import (
    REPO_ROOT,
    Bus,
    KitSettings,
    ServiceProcess,
    SigningKey,
    action_digest,
    authorization_message,
    create_pool,
)
from systems.seed import seed_demo

Authorize = Callable[..., s.ActionAuthorized]


def sign_authorization(key: SigningKey, data: s.ActionAuthorizedData) -> s.ActionAuthorizedData:
    """Sign `data` exactly as the policy service does: over `authorization_message`, signature excluded."""
    signature = key.sign(authorization_message(data))
    return data.model_copy(update={"authorization": data.authorization.model_copy(update={"signature": signature})})


@pytest.fixture
def policy_key(kit: KitSettings) -> SigningKey:
    return SigningKey.load_or_create(kit.keys_dir, "policy")


@pytest.fixture
def authorize(policy_key: SigningKey) -> Authorize:
    """Build a signed `action.authorized` event, as the policy service would."""

    def make(
        tenant: str,
        tool: str,
        args: dict[str, Any],
        *,
        action_id: str | None = None,
        task_id: str | None = None,
        ttl_s: float = 600,
        key: SigningKey | None = None,
        issued_at: datetime | None = None,
    ) -> s.ActionAuthorized:
        issued = issued_at or datetime.now(UTC)
        data = s.ActionAuthorizedData(
            action_id=action_id or f"a-{uuid.uuid4().hex[:12]}",
            task_id=task_id or f"t-{uuid.uuid4().hex[:12]}",
            tenant_id=tenant,
            step=1,
            tool=tool,
            args=args,
            authorization=s.Authorization(
                via="policy",
                policy_version="sha256:test",
                action_digest=action_digest(tenant, tool, args),
                issued_at=issued,
                expires_at=issued + timedelta(seconds=ttl_s),
                key_id=(key or policy_key).key_id,
                signature="",
            ),
        )
        return s.ActionAuthorized.build(sign_authorization(key or policy_key, data), source="tidegate/policy")

    return make


@pytest.fixture
async def pool(infra: Any) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(infra.database_url, max_size=4)
    yield p
    await p.close()


@pytest.fixture
async def tenant(pool: asyncpg.Pool) -> str:
    """A tenant of this test alone, with the demo data seeded."""
    name = f"ten-{uuid.uuid4().hex[:8]}"
    await seed_demo(pool, [name])
    return name


@dataclass
class Listener:
    """Every result and dead letter published under this test's prefix."""

    results: list[Any] = field(default_factory=list)
    dead: list[s.EventRejected] = field(default_factory=list)

    def for_action(self, action_id: str) -> list[Any]:
        return [e for e in self.results if e.data.action_id == action_id]

    def dead_codes(self, action_id: str) -> list[str]:
        return [d.data.code for d in self.dead if action_id in d.data.raw_value]


@pytest.fixture
async def listener(kit: KitSettings) -> AsyncIterator[Listener]:
    found = Listener()
    bus = AdminBus(kit, "test-listener")

    async def on_result(event: Any) -> None:
        found.results.append(event)

    async def on_dead(event: s.EventRejected) -> None:
        found.dead.append(event)

    bus.consume("actions.results", on_result, group_id=f"{kit.topic_prefix}test-listener")
    bus.consume("deadletter", on_dead, group_id=f"{kit.topic_prefix}test-listener")
    await bus.start()
    yield found
    await bus.stop()


@pytest.fixture
async def publisher(kit: KitSettings) -> AsyncIterator[Bus]:
    """A bus to publish test events with, each signed as its rightful producer (the policy service, an operator...)."""
    bus = SigningBus(kit, "test-producer")
    await bus.start()
    yield bus
    await bus.stop()


@pytest.fixture
async def executor(kit: KitSettings) -> AsyncIterator[ServiceProcess]:
    """The executor service, in process, on this test's prefix."""
    from services.executor.app import build

    svc = build(kit=kit)
    await svc.start()
    yield svc
    await svc.stop()


@pytest.fixture
def resign(policy_key: SigningKey) -> Callable[..., s.ActionAuthorized]:
    """Change fields of an authorization and sign it again with the real policy key (as a buggy policy service could)."""

    def make(event: s.ActionAuthorized, **auth_updates: Any) -> s.ActionAuthorized:
        data = event.data.model_copy(update={"authorization": event.data.authorization.model_copy(update=auth_updates)})
        return s.ActionAuthorized.build(sign_authorization(policy_key, data), source="tidegate/policy")

    return make


@dataclass
class ExecutorProcess:
    """A real `python -m services.executor` process."""

    proc: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
async def spawn_executor(kit: KitSettings, tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[ExecutorProcess]]]:
    """Start executor processes on this test's prefix, database and keys; waits until each is ready."""
    started: list[ExecutorProcess] = []

    async def spawn(tools_dir: Path | None = None, *, log_level: str = "WARNING") -> ExecutorProcess:
        n = len(started)
        ready = tmp_path / f"ready-{n}"
        env = {
            **os.environ,
            "TIDEGATE_KAFKA_BOOTSTRAP": kit.kafka_bootstrap,
            "TIDEGATE_DATABASE_URL": kit.database_url,
            "TIDEGATE_TOPIC_PREFIX": kit.topic_prefix,
            "TIDEGATE_KEYS_DIR": str(kit.keys_dir),
            "TIDEGATE_TOOLS_DIR": str(tools_dir or kit.tools_dir),
            "TIDEGATE_READY_DIR": str(ready),
            "TIDEGATE_LOG_LEVEL": log_level,
        }
        log = tmp_path / f"executor-{n}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "services.executor"], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        handle = ExecutorProcess(proc, log)
        started.append(handle)
        deadline = time.monotonic() + 60
        while not (ready / "executor.ready").exists():
            if proc.poll() is not None:
                raise AssertionError(f"executor exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"executor not ready after 60 s:\n{log.read_text()[-3000:]}")
            await asyncio.sleep(0.05)
        return handle

    yield spawn
    for handle in started:
        handle.stop()


def tools_dir_with(tmp_path: Path, *extra: dict[str, Any]) -> Path:
    """A tool catalog: the demo's tools plus `extra` specs (e.g. http tools pointing at a local stub)."""
    directory = tmp_path / "tools"
    directory.mkdir(exist_ok=True)
    for path in (REPO_ROOT / "catalog" / "tools").glob("*.yaml"):
        shutil.copy(path, directory / path.name)
    for spec in extra:
        (directory / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec))
    return directory


@pytest.fixture
def make_tools_dir(tmp_path: Path) -> Callable[..., Path]:
    return lambda *extra: tools_dir_with(tmp_path, *extra)


def ledger_entry_tool(url: str, **kw: Any) -> dict[str, Any]:
    """An HTTP tool unsafe to repeat (no idempotency key, not idempotent) posting to `url`/entries: a general ledger."""
    return {
        "name": "post_ledger_entry",
        "description": "Post an entry to the general ledger (no idempotency key, not idempotent).",
        "risk": "financial",
        "kind": "http",
        "url": f"{url}/entries",
        "args_schema": {"type": "object", "properties": {"amount_usd": {"type": "number"}}},
    } | kw


# What the stub answers a request: a status and a JSON body, and optionally headers.
Behaviour = Callable[[dict[str, Any]], Awaitable[tuple[int, dict[str, Any]] | tuple[int, dict[str, Any], dict[str, str]]]]


@dataclass
class HttpStub:
    """A tiny local HTTP server standing in for a tool's REST API; records every request it gets."""

    behaviour: Behaviour
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            request = {"method": method, "path": path, "headers": headers, "json": json.loads(body) if body else None}
            self.requests.append(request)
            status, payload, *more = await self.behaviour(request)
            raw = json.dumps(payload).encode()
            extra = "".join(f"{name}: {value}\r\n" for name, value in (more[0] if more else {}).items())
            writer.write(
                f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(raw)}\r\n{extra}"
                f"connection: close\r\n\r\n".encode()
                + raw
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def http_stub() -> AsyncIterator[Callable[[Behaviour], Awaitable[HttpStub]]]:
    stubs: list[HttpStub] = []

    async def start(behaviour: Behaviour) -> HttpStub:
        stub = HttpStub(behaviour)
        stub.server = await asyncio.start_server(stub._serve, "127.0.0.1", 0)
        stubs.append(stub)
        return stub

    yield start
    for stub in stubs:
        assert stub.server is not None
        stub.server.close()
