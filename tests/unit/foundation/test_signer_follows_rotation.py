"""A running service signs with the key `tidegate keys rotate` made, without a restart (platform2 finding 3)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import schemas as s
from servicekit import KitSettings, SigningKey, deployment_authority, service_key, sign_event
from servicekit.signing import RECHECK_S
from tests.conftest import eventually
from tidegate.cli import app

runner = CliRunner()


@pytest.fixture
def kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KitSettings:
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    return KitSettings()


def rejected() -> s.EventRejected:
    data = s.EventRejectedData(topic="tidegate.tasks", partition=0, offset=0, raw_value="", code="c", error="e", service="policy")
    return s.EventRejected.build(data, source="tidegate/policy")


def refusal(kit: KitSettings, event: s.Envelope, *, seconds_later: float = 0.0) -> str | None:
    """What the deployment's verifiers say of `event` when it arrives `seconds_later` from now."""
    authority = deployment_authority(kit)
    authority.clock = lambda: time.time() + seconds_later
    found = authority.check(s.encode(event), event)
    return None if found is None else found.code


async def test_a_running_signer_signs_with_the_rotated_key_and_is_believed_after_the_old_ones_grace(kit: KitSettings) -> None:
    running = service_key(kit, "policy")  # loaded once, as the service loads it at start
    old = running.key_id
    rotated = runner.invoke(app, ["keys", "rotate", "policy"])
    assert rotated.exit_code == 0, rotated.output
    assert "no restart needed" in rotated.output
    new = await eventually(lambda: running.key_id if running.key_id != old else None, timeout=RECHECK_S + 5, what="the new key")
    assert f"→ {new}" in rotated.output
    signed = sign_event(rejected(), running)
    assert signed.keyid == new
    assert refusal(kit, signed, seconds_later=kit.retired_key_grace_s + 60) is None  # the outage the finding saw: signer_retired


def test_the_key_file_is_read_at_most_once_a_recheck_and_its_id_always_matches_the_signature(tmp_path: Path) -> None:
    now = [0.0]
    first = SigningKey.load_or_create(tmp_path, "audit")
    path = tmp_path / "audit" / "audit.key"
    running = SigningKey("audit", first.private, path=path, recheck_s=1.0, monotonic=lambda: now[0])
    reads = 0
    real_read = Path.read_bytes

    def counted(self: Path) -> bytes:
        nonlocal reads
        reads += 1
        return real_read(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "read_bytes", counted)
        ids = {running.key_id for _ in range(1000)}
        assert reads == 0  # the hot path: a clock read, no file
        now[0] = 1.0
        ids.add(running.key_id)
        assert (reads, ids) == (1, {first.key_id})
    old = running.key_id
    path.unlink()  # mid-rotation: the old key is gone, the new one not yet written
    now[0] = 2.0
    assert running.key_id == old
    path.write_bytes(b"not a key")  # unreadable: kept, with a warning
    now[0] = 3.0
    assert running.key_id == old
    path.unlink()
    new = SigningKey.load_or_create(tmp_path, "audit")  # what `rotate` writes after retiring the old public key
    assert running.key_id == old  # within the recheck: not looked at yet
    now[0] = 4.0
    assert running.key_id == new.key_id
    assert running.sign(b"m") == new.sign(b"m")  # Ed25519 is deterministic: the same key


def test_a_key_made_in_memory_follows_no_file(tmp_path: Path) -> None:
    loaded = SigningKey.load_or_create(tmp_path, "planner")
    in_memory = SigningKey("planner", loaded.private, monotonic=lambda: 1e9)
    assert in_memory.key_id == loaded.key_id
