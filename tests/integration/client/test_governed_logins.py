"""Serving a governed function on the real bus with the logins the docs prescribe: the agent proposes, the tool's principal serves."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from conftest import Stack
from pydantic import SecretStr

from servicekit import ADMIN, KitSettings, SigningKey, kafka_options
from servicekit.bus_admin import alter_scram, unknowable_password
from servicekit.bus_rotation import start_rotation
from tidegate.client import ClientSettings, Tidegate, governed
from tidegate.client.governed import NotServed


def as_agent(settings: ClientSettings, kit: KitSettings) -> ClientSettings:
    """The client logged in as the bus's `agent` principal, as docs/integrations.md sets it up."""
    login = kafka_options(kit, "agent")
    assert login.get("sasl_plain_username") == "agent", "no credentials for agent: is the broker up with logins (infra up)?"
    password = SecretStr(login["sasl_plain_password"])
    return settings.model_copy(update={"sasl_username": "agent", "sasl_password": password, "sasl_mechanism": login["sasl_mechanism"]})


async def test_an_agent_logged_in_as_agent_gets_its_function_run_by_a_serve_loop_logged_in_as_the_tool(
    stack: Stack, client_settings: ClientSettings
) -> None:
    """`update_inventory` is a `topic` tool of the demo catalog, so `infra up` made its principal `tool-update_inventory`."""
    SigningKey.load_or_create(stack.kit.keys_dir / "tools", "update_inventory")  # `tidegate keys add-tool update_inventory`
    ran: list[tuple[str, int]] = []
    async with Tidegate(as_agent(client_settings, stack.kit)) as tg:

        @governed("update_inventory", client=tg)  # served as tool-update_inventory: its credentials file is on this machine
        def update_inventory(sku: str, delta: int, reason: str = "") -> dict[str, Any]:
            ran.append((sku, delta))
            return {"sku": sku, "on_hand": 10 + delta}

        assert await update_inventory("KB-100", 3) == {"sku": "KB-100", "on_hand": 13}
    assert ran == [("KB-100", 3)]


async def test_the_agent_login_alone_cannot_serve_and_the_caller_is_told_why_at_once(stack: Stack, client_settings: ClientSettings) -> None:
    """`reorder_stock` has no principal on this broker: the agent's login may not read its requests."""
    async with Tidegate(as_agent(client_settings, stack.kit)) as tg:

        @governed("reorder_stock", client=tg)
        def reorder_stock(sku: str, quantity: int) -> int:
            return quantity

        began = time.monotonic()
        with pytest.raises(NotServed, match=r"SASL user 'agent' may not read .*tools\.reorder_stock\.requests.*tool-reorder_stock"):
            await asyncio.wait_for(reorder_stock("KB-1", 3), 20)
        assert time.monotonic() - began < client_settings.decision_timeout_s


async def test_a_function_served_under_the_name_of_a_catalog_tool_the_executor_runs_itself_is_refused(
    stack: Stack, client_settings: ClientSettings
) -> None:
    """`issue_refund` is a `python` tool: the executor would run the catalog's refund, never this function."""
    SigningKey.load_or_create(stack.kit.keys_dir / "tools", "issue_refund")  # a key of its own is not what is missing
    async with Tidegate(client_settings) as tg:  # admin: the topic is missing, not hidden

        @governed("issue_refund", client=tg)
        def issue_refund(payee_id: str, amount_usd: float, order_id: str) -> str:
            return "refunded"

        with pytest.raises(NotServed, match=r"tools\.issue_refund\.requests is not on the broker: .*kind `topic`.*executor itself"):
            await asyncio.wait_for(issue_refund("cus_1", 5.0, "O-1"), 20)


async def test_a_tool_login_rotated_to_scram_sha_256_still_serves(
    stack: Stack, client_settings: ClientSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tidegate infra rotate-login tool-update_inventory` gave the tool a new password on SCRAM-SHA-256 (its file says so).

    The serve loop took the user and password from the file but logged in on SCRAM-SHA-512, where the broker holds the
    former password: refused, `NotServed`. Rotated here in a copy of the logins folder, and put back after: the SCRAM-SHA-256
    credential retired (never deleted), the SCRAM-SHA-512 one untouched.
    """
    principal = "tool-update_inventory"
    folder = tmp_path / "credentials"
    shutil.copytree(stack.kit.kafka_credentials_dir, folder)
    monkeypatch.setenv("TIDEGATE_KAFKA_CREDENTIALS_DIR", str(folder))  # where the serve loop reads `tool-<tool>.properties`
    SigningKey.load_or_create(stack.kit.keys_dir / "tools", "update_inventory")
    rotated = await start_rotation(stack.kit.kafka_bootstrap, folder, principal)
    try:
        assert rotated.mechanism == "SCRAM-SHA-256"
        ran: list[str] = []
        async with Tidegate(as_agent(client_settings, stack.kit)) as tg:

            @governed("update_inventory", client=tg)
            def update_inventory(sku: str, delta: int, reason: str = "") -> dict[str, Any]:
                ran.append(sku)
                return {"sku": sku, "on_hand": 10 + delta}

            assert await update_inventory("KB-200", 1) == {"sku": "KB-200", "on_hand": 11}
        assert ran == ["KB-200"]
    finally:
        admin = AIOKafkaAdminClient(bootstrap_servers=stack.kit.kafka_bootstrap, **kafka_options(stack.kit, ADMIN))
        await admin.start()
        try:
            await alter_scram(admin, {principal: ("SCRAM-SHA-256", unknowable_password())})
        finally:
            await admin.close()
