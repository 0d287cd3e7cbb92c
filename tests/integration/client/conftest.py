"""The real policy, approval and executor services on this test's prefix, with governed tools in the catalog."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr

from servicekit import (
    ADMIN,
    REPO_ROOT,
    KitSettings,
    ServiceProcess,
    catalog_topic_names,
    client_key,
    client_private_key,
    ensure_topics,
    kafka_options,
)
from servicekit.signing import SigningKey
from tidegate.client import ClientSettings

CLIENT = "alice@acme.example"

NOTES_SERVER = REPO_ROOT / "examples" / "mcp_upstream" / "notes_server.py"

GOVERNED_TOOLS: list[dict[str, Any]] = [
    {
        "name": "reorder_stock",
        "description": "Order more of a SKU from the supplier (a governed Python function of the agent's process).",
        "risk": "write_low",
        "kind": "topic",
        "accepts_idempotency_key": True,
        "timeout_s": 10,
        "reply_key_file": "tools/reorder_stock.pub",
        "tenants": ["acme", "globex"],  # both tenants' agents may call it (each serves it from its own process)
        "args_schema": {
            "type": "object",
            "additionalProperties": False,
            "required": ["sku", "quantity"],
            "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer", "minimum": 1}},
        },
    },
    {
        "name": "pay_vendor",
        "description": "Pay a vendor invoice (a governed Python function of the agent's process).",
        "risk": "financial",
        "kind": "topic",
        "accepts_idempotency_key": True,
        "timeout_s": 10,
        "reply_key_file": "tools/pay_vendor.pub",
        "tenants": ["acme"],
        "facts": {"amount": "amount_usd", "payee": "payee_id", "documentation": "invoice_id"},
        "args_schema": {
            "type": "object",
            "additionalProperties": False,
            "required": ["payee_id", "amount_usd", "invoice_id"],
            "properties": {"payee_id": {"type": "string"}, "amount_usd": {"type": "number"}, "invoice_id": {"type": "string"}},
        },
    },
    {
        "name": "tag_order",
        "description": "Tag one of acme's orders (acme's own function, served by acme's agent process; no other tenant's).",
        "risk": "write_low",
        "kind": "topic",
        "accepts_idempotency_key": True,
        "timeout_s": 10,
        "reply_key_file": "tools/tag_order.pub",
        "tenants": ["acme"],
        "undo": {"irreversible": "a person removes the tag"},
        "args_schema": {
            "type": "object",
            "additionalProperties": False,
            "required": ["order_id", "tag"],
            "properties": {"order_id": {"type": "string"}, "tag": {"type": "string"}},
        },
    },
]


@pytest.fixture
def kit(infra: Any, topics: str, tmp_path: Path) -> KitSettings:
    """Kit settings with the demo catalog plus the governed tools."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for path in (REPO_ROOT / "catalog" / "tools").glob("*.yaml"):
        shutil.copy(path, tools / path.name)
    for spec in GOVERNED_TOOLS:
        (tools / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec))
    # The example upstream MCP server's write tool, as `tidegate mcp import` writes it and a reviewer classifies it.
    notes = {
        "name": "notes_add_note",
        "description": "Add a note to a customer's file (upstream MCP server).",
        "risk": "write_low",
        "kind": "mcp",
        "tenants": ["acme"],
        "timeout_s": 30,
        "mcp": {"command": [sys.executable, str(NOTES_SERVER), "--db", str(tmp_path / "notes.json")], "tool": "add-note"},
        "args_schema": {
            "type": "object",
            "required": ["customer", "text"],
            "properties": {"customer": {"type": "string"}, "text": {"type": "string"}},
        },
    }
    (tools / "notes_add_note.yaml").write_text(yaml.safe_dump(notes))
    kit = KitSettings(
        kafka_bootstrap=infra.kafka_bootstrap,
        database_url=infra.database_url,
        db_credentials_dir=infra.db_credentials_dir,
        topic_prefix=topics,
        keys_dir=tmp_path / "keys",
        tools_dir=tools,
    )
    for spec in GOVERNED_TOOLS:  # each governed function's reply key; the catalog names its public half
        SigningKey.load_or_create(kit.keys_dir / "tools", spec["name"])
    client_key(kit, "acme", CLIENT)  # `tidegate clients add acme alice@acme.example`
    return kit


@pytest.fixture
def client_settings(kit: KitSettings, tmp_path: Path) -> ClientSettings:
    login = kafka_options(kit, ADMIN)  # the tests' processes log in as admin (the test tools have no principals of their own)
    password = login.get("sasl_plain_password")
    return ClientSettings(
        kafka_bootstrap=kit.kafka_bootstrap,
        topic_prefix=kit.topic_prefix,
        sasl_username=login.get("sasl_plain_username"),
        sasl_password=SecretStr(password) if password else None,
        # admin.properties' `sasl.mechanism`: `tidegate infra rotate-login admin` moves admin to SCRAM-SHA-256 and back
        **({"sasl_mechanism": login["sasl_mechanism"]} if "sasl_mechanism" in login else {}),
        signing_key_path=client_private_key(kit, "acme", CLIENT),
        tool_keys_dir=kit.keys_dir / "tools",
        service_keys_dir=kit.keys_dir,
        tenant="acme",
        principal=CLIENT,
        proposer="external:tests",
        state_dir=tmp_path / "client-state",
        decision_timeout_s=45,
    )


@dataclass
class Stack:
    """The running services and a way to act as an approver through the approval API."""

    kit: KitSettings
    approval: ServiceProcess
    http: httpx.AsyncClient

    async def approver_token(self, approver: str, groups: list[str]) -> str:
        from services.approval import auth

        assert self.approval.pool is not None
        token = auth.new_token()
        await self.approval.approval.repo.add_token(auth.hash_token(token), approver, "acme", groups)
        return token

    async def decide(self, approval_id: str, verb: str, token: str, **body: Any) -> None:
        record = await self.http.get(
            f"{self.approval.http_url}/api/v1/approvals/{approval_id}", headers={"Authorization": f"Bearer {token}"}
        )
        assert record.status_code == 200, record.text
        answer = await self.http.post(
            f"{self.approval.http_url}/api/v1/approvals/{approval_id}/{verb}",
            json={"action_digest": record.json()["action_digest"], **body},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.status_code == 200, answer.text


@pytest.fixture
async def stack(kit: KitSettings) -> AsyncIterator[Stack]:
    """Policy, approval (HTTP on a free port) and executor, in process, on this test's prefix and database."""
    from services.approval.app import build as build_approval
    from services.approval.settings import ApprovalSettings
    from services.executor.app import build as build_executor
    from services.policy.app import build as build_policy

    # The governed tools' topics (and their principals' ACLs), as `tidegate topics` makes them: services may not create topics.
    await ensure_topics(kit.kafka_bootstrap, kit.topic_prefix, catalog_topic_names(spec["name"] for spec in GOVERNED_TOOLS))
    services = [build_policy(kit), build_approval(kit, ApprovalSettings(http_port=0, sweep_interval_s=0.2)), build_executor(kit=kit)]
    started: list[ServiceProcess] = []
    async with httpx.AsyncClient(timeout=10) as http:
        try:
            for svc in services:
                await svc.start()
                started.append(svc)
            yield Stack(kit, services[1], http)
        finally:
            for svc in reversed(started):
                await svc.stop()
