"""Tenants' connector credentials: sealed so only the executor opens them, scoped to enabled tools, rotated."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

import connectors as c
import schemas as s
from servicekit import REPO_ROOT, ToolCatalog
from servicekit.authority import authority_for
from servicekit.signing import SigningKey
from servicekit.toolcontract import ToolError

SECRET = "sk_test_CANARY_4f1d2b"


def spec(name: str, risk: str, connector: str = "stripe") -> s.ToolSpec:
    return s.ToolSpec.model_validate(
        {
            "name": name,
            "description": "d",
            "args_schema": {"type": "object"},
            "risk": risk,
            "kind": "python",
            "entrypoint": "m:f",
            "connector": connector,
        }
    )


CATALOG = {t.name: t for t in [spec("stripe_get_charge", "read"), spec("stripe_refund", "financial"), spec("other", "read", "zendesk")]}


@pytest.fixture
def vault(tmp_path: Path) -> c.Vault:
    v = c.Vault(tmp_path / "keys")
    v.ensure()
    return v


@pytest.fixture
def writer(tmp_path: Path) -> c.GrantWriter:
    """Grants in memory as `tidegate connectors` writes them: signed by an operator on the allow-list."""
    keys = tmp_path / "keys"
    operator = SigningKey.load_or_create(keys / "operators", "ops", tmp_path / "operator-keys")
    verifier = c.GrantVerifier(authority_for(keys, keys / "operators", keys / "clients"))
    return c.GrantWriter(c.InMemoryGrantStore(), c.GrantSigner(operator), verifier)


async def test_secret_is_sealed_for_its_tenant_and_connector_only(vault: c.Vault) -> None:
    sealed = vault.seal(SECRET, "acme", "stripe")
    assert SECRET.encode() not in sealed.ciphertext
    assert vault.open(sealed, "acme", "stripe") == SECRET
    for tenant, connector in [("globex", "stripe"), ("acme", "zendesk")]:  # a row copied elsewhere does not open
        with pytest.raises(c.VaultError):
            vault.open(sealed, tenant, connector)


async def test_sealing_needs_only_the_public_key(vault: c.Vault, tmp_path: Path) -> None:
    operator = tmp_path / "operator"
    operator.mkdir()
    (operator / f"{c.KEY_NAME}.pub").write_bytes(vault.public_path.read_bytes())
    sealed = c.Vault(operator).seal(SECRET, "acme", "stripe")
    with pytest.raises(c.VaultError):
        c.Vault(operator).open(sealed, "acme", "stripe")  # the operator's machine cannot read it back
    assert vault.open(sealed, "acme", "stripe") == SECRET
    assert oct(vault.private_path.stat().st_mode & 0o777) == "0o600"


async def test_enable_defaults_to_read_only_tools_and_refuses_unknown_ones(writer: c.GrantWriter) -> None:
    store = writer
    grant = await c.enable(store, CATALOG, "acme", "stripe")
    assert grant.tools == {"stripe_get_charge"}
    grant = await c.enable(store, CATALOG, "acme", "stripe", tools=["stripe_refund"], connection={"base_url": "http://x"})
    assert grant.tools == {"stripe_get_charge", "stripe_refund"}
    assert grant.connection == {"base_url": "http://x"}
    with pytest.raises(c.ConnectorError):
        await c.enable(store, CATALOG, "acme", "stripe", tools=["other"])
    with pytest.raises(c.ConnectorError):
        await c.enable(store, CATALOG, "acme", "salesforce")


@pytest.mark.parametrize(
    ("connector", "setting", "said"),
    [
        ("stripe", "base_ur=http://127.0.0.1:12111", "stripe reads no account setting 'base_ur' (its settings: base_url)"),
        ("stripe", "base_url=127.0.0.1:12111", "stripe base_url='127.0.0.1:12111': expected an http(s) URL with a host"),
        ("zendesk", "email=agent", "zendesk email='agent': expected an email address"),
        ("bigquery", "max_bytes_billed=10GB", "bigquery max_bytes_billed='10GB': expected a whole number above 0"),
        ("salesforce", "api_version=latest", "salesforce api_version='latest': expected an API version such as 59.0"),
    ],
)
async def test_an_account_setting_the_connector_does_not_read_or_cannot_use_is_refused_and_nothing_changes(
    writer: c.GrantWriter, connector: str, setting: str, said: str
) -> None:
    """An operator's typo was stored and signed in silence: the refunds then went to api.stripe.com (connectors probe F1)."""
    await c.enable(writer, CATALOG, "acme", "stripe", connection={"base_url": "http://127.0.0.1:12111"})
    key, _, value = setting.partition("=")
    with pytest.raises(c.ConnectorError) as refused:
        await c.enable(writer, ToolCatalog.load(REPO_ROOT / "catalog" / "tools"), "acme", connector, connection={key: value})
    assert said in str(refused.value)
    assert str(refused.value).endswith("nothing was changed")
    stripe = await writer.store.get("acme", "stripe")
    assert stripe is not None
    assert stripe.connection == {"base_url": "http://127.0.0.1:12111"}


async def test_an_empty_account_setting_removes_it(writer: c.GrantWriter) -> None:
    await c.enable(writer, CATALOG, "acme", "stripe", connection={"base_url": "http://127.0.0.1:12111"})
    grant = await c.enable(writer, CATALOG, "acme", "stripe", connection={"base_url": ""})
    assert grant.connection == {}  # back to Stripe's own address, as when it was never set


async def test_access_opens_the_credential_of_an_enabled_tool(vault: c.Vault, writer: c.GrantWriter) -> None:
    store = writer
    access = c.ConnectorAccess(writer.store, vault, writer.verifier)
    with pytest.raises(ToolError) as missing:
        await access.for_call("acme", "stripe", "stripe_get_charge")
    assert missing.value.type == "credential_missing"
    assert not missing.value.retryable

    await c.enable(store, CATALOG, "acme", "stripe", connection={"base_url": "http://x"})
    with pytest.raises(ToolError) as unset:
        await access.for_call("acme", "stripe", "stripe_get_charge")
    assert unset.value.type == "credential_missing"

    await c.set_credential(store, vault, "acme", "stripe", SECRET + "\n")
    granted = await access.for_call("acme", "stripe", "stripe_get_charge")
    assert (granted.secret, granted.connection) == (SECRET, {"base_url": "http://x"})
    assert SECRET not in repr(granted)
    assert SECRET not in repr(await writer.store.get("acme", "stripe"))

    with pytest.raises(ToolError) as scope:
        await access.for_call("acme", "stripe", "stripe_refund")  # a write the tenant did not enable
    assert scope.value.type == "tool_not_enabled"
    with pytest.raises(ToolError) as other_tenant:
        await access.for_call("globex", "stripe", "stripe_get_charge")
    assert other_tenant.value.type == "credential_missing"

    await c.disable(store, "acme", "stripe")
    with pytest.raises(ToolError) as revoked:
        await access.for_call("acme", "stripe", "stripe_get_charge")
    assert revoked.value.type == "credential_missing"
    assert "disabled" in revoked.value.message


async def test_a_secret_swapped_into_another_tenants_row_does_not_open(vault: c.Vault, writer: c.GrantWriter) -> None:
    store = writer.store
    for tenant in ("acme", "globex"):
        await c.enable(writer, CATALOG, tenant, "stripe")
    await c.set_credential(writer, vault, "acme", "stripe", SECRET)
    stolen = await store.get("acme", "stripe")
    globex = await store.get("globex", "stripe")
    assert stolen is not None
    assert globex is not None
    access = c.ConnectorAccess(store, vault, writer.verifier)
    await store.put(replace(globex, sealed=stolen.sealed))  # by a writer of the table: the operator's signature no longer holds
    with pytest.raises(ToolError) as tampered:
        await access.for_call("globex", "stripe", "stripe_get_charge")
    assert tampered.value.type == "grant_tampered"
    await writer.put(replace(globex, sealed=stolen.sealed))  # even signed by an operator, the seal is bound to its tenant
    with pytest.raises(ToolError) as refused:
        await access.for_call("globex", "stripe", "stripe_get_charge")
    assert refused.value.type == "credential_missing"
    assert SECRET not in refused.value.message + tampered.value.message


async def test_rotation_reseals_every_secret_and_retires_the_old_key(vault: c.Vault, writer: c.GrantWriter) -> None:
    store = writer.store
    await c.enable(writer, CATALOG, "acme", "stripe")
    await c.set_credential(writer, vault, "acme", "stripe", SECRET)
    before = await store.get("acme", "stripe")
    assert before is not None
    assert before.sealed is not None
    old, new = vault.rotate()
    assert old == before.sealed.key_id != new
    assert await c.reseal_all(writer, vault) == (1, 0)
    vault.retire(old)
    after = await store.get("acme", "stripe")
    assert after is not None
    assert after.sealed is not None
    assert after.sealed.key_id == new
    assert await c.ConnectorAccess(store, vault, writer.verifier).for_call("acme", "stripe", "stripe_get_charge") == c.Access(SECRET, {})
    with pytest.raises(c.VaultError):
        vault.open(before.sealed, "acme", "stripe")  # the old ciphertext is dead once its key is gone


def test_retry_after_reads_seconds_and_http_dates() -> None:
    from datetime import UTC, datetime

    from servicekit.toolcontract import retry_after_s

    now = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
    assert retry_after_s("7") == 7.0
    assert retry_after_s("Mon, 30 Nov 2026 12:00:30 GMT", now) == 30.0
    assert retry_after_s(None) is None
    assert retry_after_s("soon") is None


async def test_the_public_key_always_matches_the_private_one_after_a_race(tmp_path: Path) -> None:
    first, second = c.Vault(tmp_path / "keys"), c.Vault(tmp_path / "keys")
    key_id = first.ensure()
    stray = c.Vault(tmp_path / "elsewhere")
    stray.ensure()
    first.public_path.write_bytes(stray.public_path.read_bytes())  # the loser of a race wrote its own public key
    assert second.ensure() == key_id
    sealed = second.seal(SECRET, "acme", "stripe")
    assert first.open(sealed, "acme", "stripe") == SECRET


async def test_rotation_leaves_secrets_sealed_to_another_deployments_key(vault: c.Vault, writer: c.GrantWriter, tmp_path: Path) -> None:
    other = c.Vault(tmp_path / "other")
    other.ensure()
    store = writer.store
    for tenant in ("globex", "acme"):
        await c.enable(writer, CATALOG, tenant, "stripe")  # a credential is set on a grant `enable` made
    await c.set_credential(writer, other, "globex", "stripe", SECRET)
    await c.set_credential(writer, vault, "acme", "stripe", SECRET)
    vault.rotate()
    assert await c.reseal_all(writer, vault) == (1, 1)
    globex = await store.get("globex", "stripe")
    assert globex is not None
    assert globex.sealed is not None
    assert other.open(globex.sealed, "globex", "stripe") == SECRET


async def test_the_private_key_lives_in_the_executors_own_folder_and_a_flat_one_moves_there(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    old = c.Vault(keys)
    old.ensure()
    sealed = old.seal(SECRET, "acme", "stripe")
    assert old.private_path == keys / "executor" / f"{c.KEY_NAME}.key"
    assert old.public_path == keys / f"{c.KEY_NAME}.pub"  # beside the other public keys
    old.private_path.rename(keys / f"{c.KEY_NAME}.key")  # the layout before: private and public keys side by side
    moved = c.Vault(keys)
    assert moved.ensure() == old.current_key_id()  # the same key pair, not a new one
    assert not (keys / f"{c.KEY_NAME}.key").exists()
    assert moved.open(sealed, "acme", "stripe") == SECRET


async def test_a_made_key_pair_is_only_read_at_start(vault: c.Vault) -> None:
    """In compose the keys are mounted read-only: the executor's start must find its pair and write nothing."""
    before = {p: p.stat().st_mtime_ns for p in vault.keys_dir.rglob("*")}
    assert c.Vault(vault.keys_dir).ensure() == vault.current_key_id()
    assert {p: p.stat().st_mtime_ns for p in vault.keys_dir.rglob("*")} == before


async def test_a_write_is_enabled_with_the_tool_that_undoes_it(writer: c.GrantWriter) -> None:
    """Connectors probe F4: `enable github --tool github_comment` (the docs' own command) let the comment run alone as
    reversible, and `tidegate undo` then failed `tool_not_enabled`: github_delete_comment was not in the grant."""
    catalog = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
    grant = await c.enable(writer, catalog, "globex", "github", tools=["github_comment"])
    assert {"github_comment", "github_delete_comment"} <= grant.tools
    grant = await c.enable(writer, catalog, "globex", "zendesk", tools=["zendesk_tag_ticket"])
    assert {"zendesk_tag_ticket", "zendesk_untag_ticket"} <= grant.tools


async def test_disabling_a_tool_the_grant_does_not_enable_is_refused_and_the_write_stays_named(writer: c.GrantWriter) -> None:
    """Connectors probe F10: `disable stripe --tool stripe_refnd` said "disabled", exited 0, and refunds kept running."""
    catalog = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
    await c.enable(writer, catalog, "northwind", "stripe", tools=["stripe_refund"])
    await c.enable(writer, catalog, "northwind", "zendesk")
    for connector, typo in (("stripe", "stripe_refnd"), ("zendesk", "stripe_refund")):  # misspelt; under the wrong connector
        with pytest.raises(c.ConnectorError) as refused:
            await c.disable(writer, "northwind", connector, tools=[typo], catalog=catalog)
        assert f"{typo} not enabled tools of {connector} for northwind" in str(refused.value)
        assert str(refused.value).endswith("nothing was changed")
    stripe = await writer.store.get("northwind", "stripe")
    assert stripe is not None
    assert "stripe_refund" in stripe.tools
    done = await c.disable(writer, "northwind", "stripe", tools=["stripe_refund"], catalog=catalog)
    assert done is not None
    assert "stripe_refund" not in done.tools


async def test_an_undo_tool_is_not_disabled_while_its_write_stays_enabled(writer: c.GrantWriter) -> None:
    catalog = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
    await c.enable(writer, catalog, "globex", "github", tools=["github_comment"])
    with pytest.raises(c.ConnectorError, match="github_delete_comment undo github_comment, which would stay enabled"):
        await c.disable(writer, "globex", "github", tools=["github_delete_comment"], catalog=catalog)
    both = await c.disable(writer, "globex", "github", tools=["github_comment", "github_delete_comment"], catalog=catalog)
    assert both is not None
    assert not {"github_comment", "github_delete_comment"} & both.tools


async def test_a_credential_for_a_connector_the_tenant_never_enabled_or_of_several_lines_is_refused_unsealed(
    vault: c.Vault, writer: c.GrantWriter
) -> None:
    """Connectors probe F9: `set-credential strpe` sealed a new key under a misspelt connector and said so, while the
    leaked key stayed in use; `connectors list` then showed `strpe` enabled."""
    await c.enable(writer, CATALOG, "northwind", "stripe")
    for connector, tenant in (("strpe", "northwind"), ("stripe", "zzz")):
        with pytest.raises(c.ConnectorError, match=f"{connector} is not enabled for {tenant}: run `tidegate connectors enable"):
            await c.set_credential(writer, vault, tenant, connector, SECRET)
        assert await writer.store.get(tenant, connector) is None
    with pytest.raises(c.ConnectorError, match="line break"):
        await c.set_credential(writer, vault, "northwind", "stripe", "sk_test_abc\nsecondline\n")
    stored = await writer.store.get("northwind", "stripe")
    assert stored is not None
    assert stored.sealed is None
    await c.set_credential(writer, vault, "northwind", "stripe", '{\n  "type": "service_account"\n}\n')  # a JSON key file, whole
