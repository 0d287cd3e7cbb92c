"""A signed grant is obeyed only if it is the one an operator made current last on `control` (security review, grants F1).

The attacker writes the grants table (or restores a backup) but has no operator key: it puts back a row an operator
once signed. The pins stand in for what the executor read on `control` (`ControlState.grants`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_grant_proof import CATALOG, SECRET

import connectors as c
from servicekit.authority import Authority
from servicekit.signing import SigningKey
from servicekit.toolcontract import ToolError


class Control:
    """The `control` records of grants: (tenant, connector) -> digest, each written by the CLI's `pin`."""

    def __init__(self) -> None:
        self.grants: dict[tuple[str, str], str] = {}

    def pins(self, tenant: str, connector: str) -> str | None:
        return self.grants.get((tenant, connector))

    def pin(self, grant: c.Grant) -> Callable[[], Coroutine[Any, Any, None]]:
        async def publish() -> None:
            self.grants[(grant.tenant_id, grant.connector)] = c.grant_digest(grant)

        return publish


def deployment(tmp_path: Path, control: Control, *, require_pin: bool = False, pin: bool = True) -> tuple[c.GrantWriter, c.ConnectorAccess]:
    keys = tmp_path / "keys"
    vault = c.Vault(keys)
    vault.ensure()
    operator = SigningKey.load_or_create(keys / "operators", "ops", tmp_path / "operator-keys")
    authority = Authority(keys, keys / "operators", keys / "clients", recheck_s=0.0)
    verifier = c.GrantVerifier(authority, pins=control.pins, require_pin=require_pin)
    writer = c.GrantWriter(c.InMemoryGrantStore(), c.GrantSigner(operator), verifier, control.pin if pin else None)
    return writer, c.ConnectorAccess(writer.store, vault, verifier)


async def connect(writer: c.GrantWriter, access: c.ConnectorAccess, *tools: str) -> None:
    await c.enable(writer, CATALOG, "acme", "zendesk", tools=tools, connection={"base_url": "https://acme.zendesk.example"})
    await c.set_credential(writer, access.vault, "acme", "zendesk", SECRET)


async def test_an_older_signed_grant_put_back_is_refused_and_the_cli_does_not_build_on_it(tmp_path: Path) -> None:
    control = Control()
    writer, access = deployment(tmp_path, control)
    await connect(writer, access, "zendesk_set_status")
    wide = await writer.store.get("acme", "zendesk")
    assert wide is not None
    await c.disable(writer, "acme", "zendesk", tools=["zendesk_set_status"], catalog=CATALOG)
    await access.for_call("acme", "zendesk", "zendesk_get_ticket")  # the current grant works

    await writer.store.put(wide)  # the attacker's copy, signature and all
    with pytest.raises(ToolError) as refused:
        await access.for_call("acme", "zendesk", "zendesk_set_status")
    assert refused.value.type == c.GRANT_ROLLED_BACK
    assert "tidegate connectors sign zendesk --tenant acme" in refused.value.message
    assert SECRET not in refused.value.message
    with pytest.raises(c.ConnectorError, match="not the grant an operator made current last"):
        await c.enable(writer, CATALOG, "acme", "zendesk", tools=["zendesk_set_status"])  # never signed over


async def test_a_grant_from_before_pins_is_obeyed_unless_required_and_pinned_it_is_bound(tmp_path: Path) -> None:
    control = Control()
    writer, access = deployment(tmp_path, control, pin=False)  # written by a release that published no record
    await connect(writer, access, "zendesk_set_status")
    old = await writer.store.get("acme", "zendesk")
    assert old is not None
    await access.for_call("acme", "zendesk", "zendesk_set_status")  # an upgrade does not stop the connector

    strict = c.ConnectorAccess(writer.store, access.vault, replace(writer.verifier, require_pin=True))
    with pytest.raises(ToolError) as refused:
        await strict.for_call("acme", "zendesk", "zendesk_get_ticket")
    assert refused.value.type == c.GRANT_UNPINNED
    assert "tidegate connectors pin zendesk --tenant acme" in refused.value.message

    pinned = replace(writer, pin=control.pin)
    await c.disable(pinned, "acme", "zendesk", tools=["zendesk_set_status"], catalog=CATALOG)  # the first write after the upgrade
    await strict.for_call("acme", "zendesk", "zendesk_get_ticket")
    await writer.store.put(old)
    with pytest.raises(ToolError) as rolled:
        await strict.for_call("acme", "zendesk", "zendesk_set_status")
    assert rolled.value.type == c.GRANT_ROLLED_BACK


async def test_a_pin_that_was_not_published_is_said_with_what_to_run(tmp_path: Path) -> None:
    control = Control()
    writer, access = deployment(tmp_path, control)
    await connect(writer, access)

    def broken(grant: c.Grant) -> Callable[[], Coroutine[Any, Any, None]]:
        async def publish() -> None:
            raise ConnectionError("broker unreachable")

        return publish

    with pytest.raises(c.ConnectorError) as failed:
        await c.disable(replace(writer, pin=broken), "acme", "zendesk")
    assert "was written, but the control record that makes it current was not published (broker unreachable)" in str(failed.value)
    assert "tidegate connectors pin zendesk --tenant acme" in str(failed.value)
    with pytest.raises(ToolError) as refused:  # fails closed: the disabled row is not current, the enabled one is gone
        await access.for_call("acme", "zendesk", "zendesk_get_ticket")
    assert refused.value.type == c.GRANT_ROLLED_BACK


async def test_a_command_cancelled_between_the_row_and_its_record_finishes_the_grant_or_says_it_did_not(tmp_path: Path) -> None:
    """The operator presses Ctrl-C (the command's task is cancelled) while `control` is slow to acknowledge the record.

    Before, the row was written, the record never sent, and the CancelledError said nothing: the connector refused every
    call (`grant_rolled_back`) and no one knew why. Now the record goes out first, then the cancellation is raised; a record
    that then fails says what to run.
    """
    control = Control()
    writer, access = deployment(tmp_path, control)
    await connect(writer, access)
    acked, sending = asyncio.Event(), asyncio.Event()

    def slow(grant: c.Grant) -> Callable[[], Coroutine[Any, Any, None]]:
        async def publish() -> None:
            sending.set()
            await acked.wait()  # the broker's acknowledgement, late
            await control.pin(grant)()

        return publish

    command = asyncio.create_task(c.enable(replace(writer, pin=slow), CATALOG, "acme", "zendesk", tools=["zendesk_set_status"]))
    await sending.wait()  # the row is written, its record on the way
    command.cancel()  # Ctrl-C
    await asyncio.sleep(0)
    acked.set()
    with pytest.raises(asyncio.CancelledError):
        await command
    await access.for_call("acme", "zendesk", "zendesk_set_status")  # the grant written is the current one: not refused

    def lost(grant: c.Grant) -> Callable[[], Coroutine[Any, Any, None]]:
        async def publish() -> None:
            sending.set()
            await acked.wait()
            raise ConnectionError("broker unreachable")

        return publish

    sending.clear()
    acked.clear()
    command = asyncio.create_task(c.disable(replace(writer, pin=lost), "acme", "zendesk", tools=["zendesk_set_status"], catalog=CATALOG))
    await sending.wait()
    command.cancel()
    await asyncio.sleep(0)
    acked.set()
    with pytest.raises(c.ConnectorError) as said:  # not a bare cancellation: the half-written grant is named, with the fix
        await command
    assert "was written, but the control record that makes it current was not published" in str(said.value)
    assert "tidegate connectors pin zendesk --tenant acme" in str(said.value)
