"""`tidegate clients rotate`: a planned client key rotation under load refuses nothing the client sends (platform probe F1).

Before, the only rotation was `clients revoke` then `clients add`: from the revocation on, every task and proposal the
client signed with the key it still held was dead-lettered `unknown_key`, and the client was told only that its task
got no outcome, until someone handed it the new key. Service, operator and tool keys had a grace window; client keys,
held outside the deployment where a new key takes longest to arrive, had none. These tests are the platform engineer
rotating a client's key while the client keeps sending, and the attacker holding the old key after the grace.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import schemas as s
from servicekit import KitSettings, SigningKey, client_private_key, deployment_authority, sign_as_client, sign_event
from tidegate.cli import app

runner = CliRunner()
ALICE = "alice@acme.example"
GRACE_S = 600.0


@pytest.fixture
def kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KitSettings:
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("TIDEGATE_RETIRED_KEY_GRACE_S", str(GRACE_S))
    return KitSettings()


def task() -> s.TaskSubmitted:
    return s.TaskSubmitted.build(s.TaskSubmittedData(task_id="t", tenant_id="acme", workflow="w", input={}, requested_by=ALICE), source="c")


def refusal(kit: KitSettings, event: s.Envelope, *, at: float | None = None, history: bool = False) -> str | None:
    appended = int((time.time() if at is None else at) * 1000)
    refused = deployment_authority(kit, history=history).check(s.encode(event), event, appended_ms=appended)
    return None if refused is None else refused.code


def clients(*args: str) -> str:
    result = runner.invoke(app, ["clients", *args], terminal_width=300)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def the_clients_copy_of_its_key(kit: KitSettings, tmp_path: Path) -> SigningKey:
    """The private key as the client holds it on its own machine: it keeps signing with it until it gets the new one."""
    held = tmp_path / "client-machine"
    held.mkdir()
    shutil.copy(client_private_key(kit, "acme", ALICE), held / f"{ALICE}.key")
    return SigningKey.load_or_create(held / "public", ALICE, held)


def test_rotating_a_client_key_refuses_nothing_the_client_sends_with_its_old_key_within_the_grace(kit: KitSettings, tmp_path: Path) -> None:
    clients("add", "acme", ALICE)
    old_key = the_clients_copy_of_its_key(kit, tmp_path)
    rotated = clients("rotate", "acme", ALICE)
    assert "retired →" in rotated
    assert "still verifies what arrives until" in rotated
    assert "TIDEGATE_RETIRED_KEY_GRACE_S" in rotated
    assert "private key (give it to the client, keep it secret):" in rotated
    assert client_private_key(kit, "acme", ALICE).exists()  # the new one, made here

    still_old = sign_event(task(), old_key)  # the client has not switched yet
    assert refusal(kit, still_old) is None  # before: unknown_key, dead-lettered, the client never told
    new = sign_as_client(kit, task())
    assert new.keyid != still_old.keyid
    assert refusal(kit, new) is None

    # After the grace the old key signs nothing new (a copy left on a laptop), and the audit judges it the same way,
    # while what it signed in time verifies for ever.
    retired_at = time.time()
    assert refusal(kit, still_old, at=retired_at + GRACE_S + 5) == "signer_retired"
    assert refusal(kit, still_old, at=retired_at + GRACE_S + 5, history=True) == "signer_retired"
    assert refusal(kit, still_old, at=retired_at + 5, history=True) is None

    listing = clients("list", "acme")
    assert f"{still_old.keyid} retired, verifies until" in listing
    assert new.keyid in listing


def test_a_client_that_brings_its_own_new_public_key_is_rotated_to_it(kit: KitSettings, tmp_path: Path) -> None:
    clients("add", "acme", ALICE)
    old_key = the_clients_copy_of_its_key(kit, tmp_path)
    own = SigningKey.load_or_create(tmp_path / "own", ALICE, tmp_path / "own-private")  # made on the client's machine
    clients("rotate", "acme", ALICE, "--public-key", str(tmp_path / "own" / f"{ALICE}.pub"))
    assert refusal(kit, sign_event(task(), own)) is None
    assert refusal(kit, sign_event(task(), old_key)) is None  # within the grace
    assert not client_private_key(kit, "acme", ALICE).exists()  # the old private key made here is gone


def test_revoking_during_the_grace_refuses_the_retired_key_at_once(kit: KitSettings, tmp_path: Path) -> None:
    """Rotated, then found leaked: `revoke` ends the old key's grace too, not only the current key."""
    clients("add", "acme", ALICE)
    old_key = the_clients_copy_of_its_key(kit, tmp_path)
    clients("rotate", "acme", ALICE)
    old = sign_event(task(), old_key)
    signed_before = time.time()
    clients("revoke", "acme", ALICE)
    assert refusal(kit, old) == "unknown_key"
    assert refusal(kit, old, at=signed_before - 1, history=True) is None  # what it signed before stays verifiable in the audit


def test_adding_another_public_key_for_a_registered_client_is_refused_not_copied_over_it(kit: KitSettings, tmp_path: Path) -> None:
    """`clients add --public-key` used to copy the new key over the registered one: the old one was refused at once and lost
    to the audit's history reader (every row it signed read as signed by an unknown key)."""
    clients("add", "acme", ALICE)
    registered = sign_as_client(kit, task())
    other = tmp_path / "other"
    SigningKey.load_or_create(other, ALICE, tmp_path / "other-private")
    result = runner.invoke(app, ["clients", "add", "acme", ALICE, "--public-key", str(other / f"{ALICE}.pub")], terminal_width=300)
    assert result.exit_code != 0
    assert f"`tidegate clients rotate acme {ALICE} --public-key" in " ".join(result.output.split())
    assert refusal(kit, registered) is None


def test_rotating_a_client_that_is_not_registered_says_how_to_register_it(kit: KitSettings) -> None:
    result = runner.invoke(app, ["clients", "rotate", "acme", ALICE], terminal_width=300)
    assert result.exit_code != 0
    assert f"`tidegate clients add acme {ALICE}` registers one" in " ".join(result.output.split())
