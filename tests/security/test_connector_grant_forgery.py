"""The executor's own database login cannot re-point a connector grant nor widen its tools (outside review round 3, F2).

The attacker held only `tidegate_executor`'s password, which could write `executor.connector_grants`. Two locks now:
that login may only read the table (`SchemaSpec.read_only`), and whoever can write it (the operator's login here, or a
superuser) still lacks the operator's key that signs each grant, so the executor refuses the row.
The tenant is connected with the real CLI; the real executor
(`services.executor.build`, real Kafka and PostgreSQL) runs signed authorizations as the policy service sends them.
A listener of the attacker's records every request it gets: none may arrive, so no credential leaves the process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from bus_helpers import Collector, Producer
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import connectors as c
import schemas as s
from servicekit import REPO_ROOT, KitSettings, SigningKey, action_digest, authorization_message
from servicekit.dbroles import service_database_url
from services.executor import build as build_executor
from standins import serve_app
from standins.zendesk import ZendeskStandIn

pytestmark = pytest.mark.integration

SECRET = "zd_live_SECRET_token_f2c41"  # the tenant's credential, searched for wherever it must not go


@dataclass
class Listener:
    """The attacker's HTTP server: answers anything with a plausible ticket, and keeps every request it got."""

    url: str = ""
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    async def record(self, request: Request) -> Response:
        self.requests.append((request.method, request.url.path, dict(request.headers)))
        return JSONResponse({"ticket": {"id": 42, "subject": "x", "status": "open", "tags": []}, "comments": []})

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self.record, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])])


def tidegate(kit: KitSettings, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`tidegate …` as the operator runs it, with this test's database and keys."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TIDEGATE_DATABASE_URL": kit.database_url, "TIDEGATE_KEYS_DIR": str(kit.keys_dir),
           "TIDEGATE_TOPIC_PREFIX": kit.topic_prefix}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "tidegate.cli", *args], input=stdin, capture_output=True, text=True, env=env, timeout=120, check=False
    )


def operator(kit: KitSettings, *args: str, stdin: str = "") -> str:
    done = tidegate(kit, *args, stdin=stdin)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@dataclass
class Stage:
    kit: KitSettings
    tenant: str
    zendesk: ZendeskStandIn
    attacker: Listener
    login: asyncpg.Connection  # a login that may write the grants (the operator's): the second lock is the signature
    producer: Producer
    collector: Collector
    policy: SigningKey

    async def call(self, tool: str, args: dict[str, Any], wait_for: Any) -> s.Envelope:
        """An authorization signed as the policy service signs it, run by the real executor; its result."""
        now = datetime.now(UTC)
        data = s.ActionAuthorizedData(
            action_id=f"a-{uuid.uuid4().hex[:12]}", task_id=f"t-{uuid.uuid4().hex[:8]}", tenant_id=self.tenant, step=1, tool=tool,
            args=args, authorization=s.Authorization(via="policy", policy_version="sha256:test", key_id=self.policy.key_id,
                                                     action_digest=action_digest(self.tenant, tool, args), issued_at=now,
                                                     expires_at=now + timedelta(minutes=10), signature=""),
        )  # fmt: skip
        signed = data.authorization.model_copy(update={"signature": self.policy.sign(authorization_message(data))})
        event = s.ActionAuthorized.build(data.model_copy(update={"authorization": signed}), source="tidegate/policy")
        await self.producer.send("actions.authorized", event)
        result: s.Envelope = await wait_for(lambda: self.collector.result(data.action_id), timeout=60, what=f"the result of {tool}")
        return result

    async def tamper(self, sql: str) -> None:
        """One statement as a login that may write the table (not the executor's: it may only read it), on this tenant's zendesk grant."""
        done = await self.login.execute(sql + " WHERE tenant_id = $1 AND connector = 'zendesk'", self.tenant)
        assert done == "UPDATE 1"


@pytest.fixture
async def stage(kit: KitSettings) -> AsyncIterator[Stage]:
    tenant = f"f2-{uuid.uuid4().hex[:8]}"
    zendesk = ZendeskStandIn(email=f"agent@{tenant}.example", token=SECRET)
    zendesk.add_ticket(42, "Refund", "Please refund order O-1.")
    attacker = Listener()
    async with serve_app(zendesk.app) as zendesk.url, serve_app(attacker.app) as attacker.url:
        operator(kit, "connectors", "enable", "zendesk", "--tenant", tenant, "--tool", "zendesk_add_internal_note",
                 "--set", f"base_url={zendesk.url}", "--set", f"email={zendesk.email}")  # fmt: skip
        operator(kit, "connectors", "set-credential", "zendesk", "--tenant", tenant, stdin=SECRET + "\n")
        executor = build_executor(kit, environ={})
        await executor.start()
        producer, collector = Producer(kit), Collector(kit, ["actions.results"])
        await producer.start()
        await collector.start()
        login = await asyncpg.connect(kit.database_url)  # the operator's login: the executor's may no longer write grants
        try:
            policy = SigningKey.load_or_create(kit.keys_dir, "policy")
            yield Stage(kit, tenant, zendesk, attacker, login, producer, collector, policy)
        finally:
            await login.close()
            await collector.stop()
            await producer.stop()
            await executor.stop()


def refused(reason: str) -> float:
    return (
        REGISTRY.get_sample_value("tidegate_rows_refused_total", {"service": "executor", "table": "connector_grants", "reason": reason})
        or 0.0
    )


async def test_a_repointed_base_url_is_refused_and_nothing_reaches_the_attackers_listener(
    stage: Stage, wait_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    read = await stage.call("zendesk_get_ticket", {"ticket_id": 42}, wait_for)
    assert read.type == "tidegate.action.succeeded", read.data  # the legitimate grant works
    assert ("GET", "/api/v2/tickets/42.json") in stage.zendesk.requests
    before = refused("invalid")

    await stage.tamper(
        f"UPDATE executor.connector_grants SET connection = jsonb_set(connection, '{{base_url}}', '\"{stage.attacker.url}\"')"
    )
    stolen = await stage.call("zendesk_get_ticket", {"ticket_id": 42}, wait_for)
    assert stolen.type == "tidegate.action.failed"
    assert stolen.data.error.type == "grant_tampered"
    assert not stolen.data.error.retryable
    assert stage.attacker.requests == []  # no request, so no credential, left the executor
    assert refused("invalid") == before + 1
    assert f"refused a call of zendesk_get_ticket for tenant {stage.tenant}: grant_tampered" in caplog.text
    assert SECRET not in caplog.text + stolen.data.error.message

    # The CLI does not sign over the changed row: an operator's next command is refused, and changes nothing.
    later = tidegate(stage.kit, "connectors", "enable", "zendesk", "--tenant", stage.tenant, "--tool", "zendesk_set_status")
    assert later.returncode != 0
    assert "changed after the operator signed it" in later.stdout + later.stderr
    row = await stage.login.fetchrow("SELECT tools, connection FROM executor.connector_grants WHERE tenant_id = $1", stage.tenant)
    assert "zendesk_set_status" not in row["tools"]
    assert stage.attacker.url in row["connection"]


async def test_an_added_write_tool_is_refused_and_a_grant_changed_by_the_cli_works(stage: Stage, wait_for: Any) -> None:
    writes_before = [r for r in stage.zendesk.requests if r[0] == "PUT"]
    await stage.tamper("UPDATE executor.connector_grants SET tools = array_append(tools, 'zendesk_set_status')")
    widened = await stage.call("zendesk_set_status", {"ticket_id": 42, "status": "solved"}, wait_for)
    assert widened.type == "tidegate.action.failed"
    assert widened.data.error.type == "grant_tampered"
    assert [r for r in stage.zendesk.requests if r[0] == "PUT"] == writes_before
    assert stage.zendesk.tickets[42]["status"] == "open"
    reads = await stage.call("zendesk_get_ticket", {"ticket_id": 42}, wait_for)
    assert reads.data.error.type == "grant_tampered"  # the whole row is distrusted, its reads too

    # The operator resets the grant they no longer trust, and grants the write through the proper commands.
    operator(stage.kit, "connectors", "disable", "zendesk", "--tenant", stage.tenant, "--forget-credential")
    operator(stage.kit, "connectors", "enable", "zendesk", "--tenant", stage.tenant, "--tool", "zendesk_set_status",
             "--set", f"base_url={stage.zendesk.url}", "--set", f"email={stage.zendesk.email}")  # fmt: skip
    operator(stage.kit, "connectors", "set-credential", "zendesk", "--tenant", stage.tenant, stdin=SECRET)
    granted = await stage.call("zendesk_set_status", {"ticket_id": 42, "status": "solved"}, wait_for)
    assert granted.type == "tidegate.action.succeeded", granted.data
    assert stage.zendesk.tickets[42]["status"] == "solved"
    assert stage.attacker.requests == []


async def test_a_copied_unsigned_or_reseeded_row_is_refused_and_an_operator_signs_an_old_one(stage: Stage, wait_for: Any) -> None:
    # The whole signed row copied to another tenant, proof and all: the proof names its own tenant.
    other = f"f2o-{uuid.uuid4().hex[:8]}"
    await stage.login.execute(
        "INSERT INTO executor.connector_grants SELECT $2, connector, enabled, tools, connection, key_id, sealed_secret, updated_at, "
        "proof_key_id, proof_signature, signed_by, signed_at FROM executor.connector_grants WHERE tenant_id = $1",
        stage.tenant, other,
    )  # fmt: skip
    copied = Stage(**{**stage.__dict__, "tenant": other})
    assert (await copied.call("zendesk_get_ticket", {"ticket_id": 42}, wait_for)).data.error.type == "grant_tampered"

    # A row with no proof (as one from before grants were signed) is refused, naming the command an operator signs it with.
    await stage.tamper(
        "UPDATE executor.connector_grants SET proof_key_id = NULL, proof_signature = NULL, signed_by = NULL, signed_at = NULL"
    )
    unsigned = await stage.call("zendesk_get_ticket", {"ticket_id": 42}, wait_for)
    assert unsigned.data.error.type == "grant_unsigned"
    assert f"tidegate connectors sign zendesk --tenant {stage.tenant}" in unsigned.data.error.message
    shown = operator(stage.kit, "connectors", "sign", "--all", "--yes")
    assert f"{stage.tenant}/zendesk (enabled)" in shown
    assert f"base_url={stage.zendesk.url}" in shown  # what the operator signs is shown first
    assert f"{other}/zendesk" not in shown  # a row changed after it was signed is never signed over by `--all`
    assert (await stage.call("zendesk_get_ticket", {"ticket_id": 42}, wait_for)).type == "tidegate.action.succeeded"
    assert (await copied.call("zendesk_get_ticket", {"ticket_id": 42}, wait_for)).data.error.type == "grant_tampered"

    # The attacker's own secret, sealed to the executor's public key (public), with the base_url of its listener.
    mine = c.Vault(stage.kit.keys_dir).seal("attackers-own-token", stage.tenant, "zendesk")
    await stage.login.execute(
        "UPDATE executor.connector_grants SET key_id = $2, sealed_secret = $3, connection = jsonb_set(connection, '{base_url}', $4::jsonb) "
        "WHERE tenant_id = $1 AND connector = 'zendesk'",
        stage.tenant, mine.key_id, mine.ciphertext, f'"{stage.attacker.url}"',
    )  # fmt: skip
    assert (await stage.call("zendesk_get_ticket", {"ticket_id": 42}, wait_for)).data.error.type == "grant_tampered"
    assert stage.attacker.requests == []


async def test_the_executors_own_login_may_read_grants_but_not_write_them(stage: Stage) -> None:
    """The first lock: what the operator writes for the executor, the executor's login cannot change (nor roll back)."""
    login = await asyncpg.connect(service_database_url(stage.kit, "executor"))
    try:
        assert await login.fetchval("SELECT count(*) FROM executor.connector_grants WHERE tenant_id = $1", stage.tenant) == 1
        for sql in (
            "UPDATE executor.connector_grants SET tools = array_append(tools, 'zendesk_set_status') WHERE tenant_id = $1",
            "DELETE FROM executor.connector_grants WHERE tenant_id = $1",
            "INSERT INTO executor.connector_grants (tenant_id, connector, enabled, tools, connection) "
            "VALUES ($1, 'github', true, '{}', '{}')",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await login.execute(sql, stage.tenant)
    finally:
        await login.close()
