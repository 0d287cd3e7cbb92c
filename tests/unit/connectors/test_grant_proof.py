"""A connector grant is trusted only under the signature of an operator on the allow-list, over all of it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import connectors as c
import schemas as s
from servicekit.authority import Authority
from servicekit.signing import SigningKey, retire, rotate
from servicekit.toolcontract import ToolError

SECRET = "zd_live_CANARY_77c1"


def spec(name: str, risk: str) -> s.ToolSpec:
    doc = {"name": name, "description": "d", "args_schema": {"type": "object"}, "risk": risk, "kind": "python", "entrypoint": "m:f"}
    return s.ToolSpec.model_validate({**doc, "connector": "zendesk"})


CATALOG = {t.name: t for t in [spec("zendesk_get_ticket", "read"), spec("zendesk_set_status", "write_low")]}


@dataclass
class Deployment:
    keys: Path
    operator: SigningKey
    writer: c.GrantWriter
    vault: c.Vault

    @property
    def access(self) -> c.ConnectorAccess:
        return c.ConnectorAccess(self.writer.store, self.vault, self.writer.verifier)

    async def stored(self) -> c.Grant:
        grant = await self.writer.store.get("acme", "zendesk")
        assert grant is not None
        return grant


@pytest.fixture
async def dep(tmp_path: Path) -> Deployment:
    keys = tmp_path / "keys"
    vault = c.Vault(keys)
    vault.ensure()
    operator = SigningKey.load_or_create(keys / "operators", "ops", tmp_path / "operator-keys")
    authority = Authority(keys, keys / "operators", keys / "clients", recheck_s=0.0)  # key files read again at every check
    writer = c.GrantWriter(c.InMemoryGrantStore(), c.GrantSigner(operator), c.GrantVerifier(authority))
    await c.enable(writer, CATALOG, "acme", "zendesk", connection={"base_url": "https://acme.zendesk.example", "email": "a@acme.example"})
    await c.set_credential(writer, vault, "acme", "zendesk", SECRET)
    return Deployment(keys, operator, writer, vault)


async def refusal(dep: Deployment, tool: str = "zendesk_get_ticket") -> ToolError:
    with pytest.raises(ToolError) as refused:
        await dep.access.for_call("acme", "zendesk", tool)
    assert not refused.value.retryable
    assert SECRET not in refused.value.message
    return refused.value


async def test_the_grant_as_signed_opens_its_credential(dep: Deployment) -> None:
    granted = await dep.access.for_call("acme", "zendesk", "zendesk_get_ticket")
    assert (granted.secret, granted.connection["base_url"]) == (SECRET, "https://acme.zendesk.example")
    assert (await dep.stored()).proof.signed_by == "ops"  # type: ignore[union-attr]


def _other_seal(dep: Deployment, grant: c.Grant) -> c.Grant:
    return replace(grant, sealed=dep.vault.seal("attackers-own-token", "acme", "zendesk"))


CHANGES: dict[str, Any] = {
    "base_url re-pointed": lambda d, g: replace(g, connection={**g.connection, "base_url": "http://127.0.0.1:38095"}),
    "a setting added": lambda d, g: replace(g, connection={**g.connection, "ca_bundle": "/tmp/evil.pem"}),
    "a write tool added": lambda d, g: replace(g, tools=g.tools | {"zendesk_set_status"}),
    "re-enabled": lambda d, g: replace(g, enabled=not g.enabled),
    "the credential swapped": _other_seal,
    "moved to another tenant": lambda d, g: replace(g, tenant_id="globex"),
    "the signer renamed": lambda d, g: replace(g, proof=replace(g.proof, signed_by="root")),
    "the signing time moved": lambda d, g: replace(g, proof=replace(g.proof, signed_at=g.proof.signed_at + timedelta(days=1))),
    "the signature garbled": lambda d, g: replace(g, proof=replace(g.proof, signature="!!not base64")),
    "the key id of a stranger": lambda d, g: replace(g, proof=replace(g.proof, key_id="ops-000000000000")),
}


@pytest.mark.parametrize("change", CHANGES)
async def test_any_change_to_a_signed_row_is_refused_as_tampered(dep: Deployment, change: str) -> None:
    changed = CHANGES[change](dep, await dep.stored())
    await dep.writer.store.put(changed)
    tenant = changed.tenant_id
    with pytest.raises(ToolError) as refused:
        await dep.access.for_call(tenant, "zendesk", "zendesk_set_status")
    assert refused.value.type == "grant_tampered", refused.value.message


async def test_a_grant_signed_by_a_key_that_is_not_an_operators_is_refused(dep: Deployment) -> None:
    service = SigningKey.load_or_create(dep.keys, "executor")  # the executor's own key: trusted for events, never for grants
    stranger = SigningKey.load_or_create(dep.keys.parent / "elsewhere", "ops")  # an operator's name, off the allow-list
    for key in (service, stranger):
        await dep.writer.store.put(c.GrantSigner(key).sign(replace(await dep.stored(), tools=frozenset(CATALOG))))
        assert (await refusal(dep, "zendesk_set_status")).type == "grant_tampered"


async def test_an_unsigned_row_is_refused_naming_the_command_and_signed_by_an_operator_it_works(dep: Deployment, caplog: Any) -> None:
    from prometheus_client import REGISTRY

    labels = {"service": "executor", "table": "connector_grants", "reason": "unsigned"}
    before = REGISTRY.get_sample_value("tidegate_rows_refused_total", labels) or 0.0
    await dep.writer.store.put(replace(await dep.stored(), proof=None))  # as the migration leaves a row from before
    refused = await refusal(dep)
    assert refused.type == "grant_unsigned"
    assert "tidegate connectors sign zendesk --tenant acme" in refused.message
    assert REGISTRY.get_sample_value("tidegate_rows_refused_total", labels) == before + 1
    assert "refused a call of zendesk_get_ticket for tenant acme: grant_unsigned" in caplog.text
    with pytest.raises(c.ConnectorError, match="nothing was changed"):  # no command carries an unchecked row over
        await c.enable(dep.writer, CATALOG, "acme", "zendesk", tools=["zendesk_set_status"])
    await dep.writer.put(await dep.stored())  # what `tidegate connectors sign` does once the operator checked it
    assert (await dep.access.for_call("acme", "zendesk", "zendesk_get_ticket")).secret == SECRET


async def test_a_rotated_operator_key_still_verifies_and_a_denied_one_does_not(dep: Deployment, tmp_path: Path) -> None:
    rotate(dep.keys / "operators", "ops", private_dir=tmp_path / "operator-keys")
    assert (await dep.access.for_call("acme", "zendesk", "zendesk_get_ticket")).secret == SECRET
    retire(dep.keys / "operators", "ops", grace=False)  # `tidegate keys deny-operator ops`
    for path in (dep.keys / "operators").glob("ops.*.retired"):
        path.write_text(path.read_text().rstrip("\n") + "\nno grace\n")
    refused = await refusal(dep)
    assert (refused.type, "taken away" in refused.message) == ("grant_unsigned", True)


async def test_the_cli_never_signs_over_a_tampered_row_and_a_reset_starts_from_nothing(dep: Deployment) -> None:
    tampered = replace(await dep.stored(), tools=frozenset(CATALOG), connection={"base_url": "http://127.0.0.1:38095"})
    await dep.writer.store.put(tampered)
    for command in (
        c.enable(dep.writer, CATALOG, "acme", "zendesk", tools=["zendesk_set_status"]),
        c.set_credential(dep.writer, dep.vault, "acme", "zendesk", "new"),
        c.disable(dep.writer, "acme", "zendesk", tools=["zendesk_set_status"]),
    ):
        with pytest.raises(c.ConnectorError, match="changed after the operator signed it"):
            await command
    assert await dep.stored() == tampered
    reset = await c.disable(dep.writer, "acme", "zendesk", forget=True)
    assert reset is not None
    assert (reset.enabled, reset.tools, reset.connection, reset.sealed) == (False, frozenset(), {}, None)
    assert (await refusal(dep)).type == "credential_missing"  # signed, and empty


async def test_rotating_the_vault_refuses_before_sealing_anything_when_a_grant_does_not_verify(dep: Deployment) -> None:
    await c.enable(dep.writer, CATALOG, "globex", "zendesk")
    await c.set_credential(dep.writer, dep.vault, "globex", "zendesk", SECRET)
    await dep.writer.store.put(replace(await dep.stored(), tools=frozenset(CATALOG)))
    dep.vault.rotate()
    with pytest.raises(c.ConnectorError, match="no credential was sealed again"):
        await c.reseal_all(dep.writer, dep.vault)
    globex = await dep.writer.store.get("globex", "zendesk")
    assert globex is not None
    assert globex.sealed is not None
    assert globex.sealed.key_id != dep.vault.current_key_id()  # nothing moved
