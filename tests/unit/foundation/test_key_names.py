"""Whoever chooses the requester of `tidegate submit` (or `propose`) must not get to choose where a key file is written.

The reviewer's F3: `tidegate submit --requested-by ../../../../../../../../../..<run dir>/keys/operators/evil`, run on a
machine holding the deployment's keys folder (a script passing on a ticket's requester, a bridge from a helpdesk), made
a key pair for that "client" and wrote its public key into `keys/operators/`, the operators' allow-list: `evil` was an
operator, who may clear kill switches and publish policy packs. The names of the tenant and of the principal were
joined into the key paths as they came. A key's name is now one file name: no path separator, no leading dot, nothing
that does not print; anything else is refused before a file is touched.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import schemas as s
from servicekit import KitSettings, SigningKey, client_key, deployment_authority, sign_as_client
from servicekit.signing import BadKeyName
from tidegate.cli import app

runner = CliRunner()


@pytest.fixture
def kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KitSettings:
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    kit = KitSettings()
    kit.operator_keys_dir.mkdir(parents=True)  # a deployment's allow-list, as the CLI makes it on first use
    return kit


def task(tenant: str, requested_by: str) -> s.TaskSubmitted:
    data = s.TaskSubmittedData(task_id="t", tenant_id=tenant, workflow="w", input={}, requested_by=requested_by)
    return s.TaskSubmitted.build(data, source="tidegate/cli")


def written(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file())


def attacks(kit: KitSettings) -> list[tuple[str, str]]:
    climb = "../" * 12
    return [
        ("acme", f"{climb}{str(kit.operator_keys_dir).lstrip('/')}/evil"),  # every `..` past / stays at /
        ("acme", f"{kit.operator_keys_dir}/evil"),
        ("acme", "../../operators/evil"),
        ("../operators", "evil"),
        ("acme", ".evil"),
        ("acme", "evil\n"),
    ]


def test_a_requester_or_tenant_that_is_a_path_makes_no_key_and_no_operator(kit: KitSettings, tmp_path: Path) -> None:
    before = written(tmp_path)
    for tenant, principal in attacks(kit):
        with pytest.raises(BadKeyName):
            sign_as_client(kit, task(tenant, principal))
        with pytest.raises(BadKeyName):
            client_key(kit, tenant, principal, registering=True)

    assert written(tmp_path) == before
    assert not list(kit.operator_keys_dir.iterdir())
    assert not [p for holders in deployment_authority(kit)._keys.values() for p in holders if p.kind == "operator"]


def test_the_clients_commands_refuse_such_names_in_one_line(kit: KitSettings, tmp_path: Path) -> None:
    before = written(tmp_path)
    for tenant, principal in attacks(kit):
        for command in (["clients", "add", tenant, principal], ["clients", "rotate", tenant, principal]):
            done = runner.invoke(app, command)
            assert done.exit_code == 2, (command, done.output)
            assert "one file name" in done.output, done.output
            assert "Traceback" not in done.output
    assert written(tmp_path) == before


def test_a_key_of_any_kind_is_named_by_one_file_name(tmp_path: Path) -> None:
    with pytest.raises(BadKeyName):
        SigningKey.load_or_create(tmp_path / "keys" / "tools", "../operators/evil")
    assert written(tmp_path) == []
    assert SigningKey.load_or_create(tmp_path / "keys", "alice@acme.example").key_id.startswith("alice@acme.example-")
