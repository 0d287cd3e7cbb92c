"""A client key is rotated by `revoke` then `add`; `add` of a principal already registered says it keeps its key (platform5 finding 8).

Before, `tidegate clients add acme X` for a registered client printed "registered" with the same key id, exit 0, as if
it had rotated it, and nothing documented how to rotate.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import schemas as s
from servicekit import KitSettings, deployment_authority, sign_as_client
from tidegate.cli import app

runner = CliRunner()
ALICE = "alice@acme.example"


@pytest.fixture
def kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KitSettings:
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    return KitSettings()


def task() -> s.TaskSubmitted:
    return s.TaskSubmitted.build(s.TaskSubmittedData(task_id="t", tenant_id="acme", workflow="w", input={}, requested_by=ALICE), source="c")


def refusal(kit: KitSettings, event: s.Envelope) -> str | None:
    refused = deployment_authority(kit).check(s.encode(event), event)
    return None if refused is None else refused.code


def said(*args: str) -> str:
    result = runner.invoke(app, ["clients", *args], terminal_width=300)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_adding_a_registered_client_again_keeps_its_key_and_says_how_to_rotate(kit: KitSettings) -> None:
    first = said("add", "acme", ALICE)
    key_id = first.split("registered: ")[1].split()[0]
    again = said("add", "acme", ALICE)
    assert f"client {ALICE} of acme is already registered: {key_id} (the same key, unchanged)" in again
    assert f"to rotate it: `tidegate clients revoke acme {ALICE}`, then `tidegate clients add acme {ALICE}`" in again
    assert "private key" not in again


def test_revoke_then_add_rotates_the_key_and_the_old_one_is_refused(kit: KitSettings) -> None:
    said("add", "acme", ALICE)
    old = sign_as_client(kit, task())
    said("revoke", "acme", ALICE)
    rotated = said("add", "acme", ALICE)
    assert "registered: " in rotated
    assert "already" not in rotated
    new = sign_as_client(kit, task())
    assert new.keyid != old.keyid
    assert refusal(kit, new) is None
    assert refusal(kit, old) == "unknown_key"
