"""A checkpoint's signature covers the time it was taken and its scope (auditor F7).

`audit export --since/--until` picks checkpoints by `taken_at`, which a database superuser could move without breaking
any signature: v1 signed id, heads and rows only. A checkpoint is now signed over its scope and `taken_at` too (v2), the
published copy carries `taken_at`, and a checkpoint taken before (v1) still verifies as it was signed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from test_archive import PREFIX, _checkpointed
from test_standalone_verifier import _export, _rewrite, _run

from schemas import decode, encode
from servicekit import Keyring, SigningKey
from services.audit.chain import Head
from services.audit.checkpoints import CHECKPOINT_TOPIC, sign_checkpoint, signature_valid, signed_message, signed_version, to_event
from services.audit.published import _checkpoint_of
from services.audit.repository import InMemoryAuditLog
from services.audit.rows import Observed
from services.audit.verify import verify_log

T0 = datetime(2026, 12, 7, 0, 1, 2, 345678, tzinfo=UTC)
HEADS = {("tidegate.tasks", 0): Head(3, bytes(32), 2)}


def _keys(tmp_path: Path) -> tuple[SigningKey, Keyring]:
    key = SigningKey.load_or_create(tmp_path, "audit")
    return key, Keyring.load(tmp_path, "audit")


def test_moving_a_checkpoints_time_or_scope_breaks_its_signature(tmp_path: Path) -> None:
    key, keyring = _keys(tmp_path)
    cp = sign_checkpoint(key, 1, HEADS, T0, scope=PREFIX)
    assert signed_version(keyring, cp) == 2
    assert not signature_valid(keyring, cp.model_copy(update={"taken_at": T0 - timedelta(days=30)}))  # into another --since window
    assert not signature_valid(keyring, cp.model_copy(update={"scope": "other."}))
    assert signature_valid(keyring, cp.model_copy(update={"taken_at": T0.astimezone(UTC)}))  # the same instant in any spelling


def test_a_checkpoint_signed_before_still_verifies_as_v1(tmp_path: Path) -> None:
    key, keyring = _keys(tmp_path)
    cp = sign_checkpoint(key, 1, HEADS, T0, scope=PREFIX)
    v1 = cp.model_copy(update={"signature": key.sign(signed_message(cp.checkpoint_id, cp.heads, cp.rows))})
    assert signed_version(keyring, v1) == 1
    assert signed_version(keyring, v1.model_copy(update={"rows": 4})) is None


def test_the_published_copy_carries_the_signed_time(tmp_path: Path) -> None:
    key, keyring = _keys(tmp_path)
    cp = sign_checkpoint(key, 1, HEADS, T0, scope=PREFIX)
    event = to_event(cp)
    assert event.data.taken_at == T0
    back = _checkpoint_of(encode(event), PREFIX)
    assert back is not None
    assert (back.taken_at, signed_version(keyring, back)) == (T0, 2)
    assert decode(CHECKPOINT_TOPIC, encode(event)).data.taken_at == T0


async def test_verify_names_a_checkpoint_whose_time_a_superuser_moved(make: Any, tmp_path: Path) -> None:
    log = InMemoryAuditLog()
    await _checkpointed(log, [make("tasks", b"{}", offset=i) for i in range(3)], tmp_path)
    keyring = Keyring.load(tmp_path, "audit")
    assert (await verify_log(log, keyring, prefix=PREFIX)).ok
    ((scope_id, cp),) = log.stored_checkpoints.items()
    log.stored_checkpoints[scope_id] = cp.model_copy(update={"taken_at": cp.taken_at - timedelta(days=400)})
    report = await verify_log(log, keyring, prefix=PREFIX)
    assert not report.ok
    assert any("signature is not valid" in b.problem for b in report.breaks), report.breaks


async def test_the_auditors_own_verifier_refuses_a_moved_time(make: Any, sample_records: list[Observed], tmp_path: Path) -> None:
    path, trust = await _export(make, sample_records, tmp_path)

    def backdated(lines: list[dict[str, Any]]) -> None:
        for cp in lines[0]["checkpoints"]:
            cp["taken_at"] = "2025-01-01T00:00:00.000000Z"
        lines[0]["checkpoint"] = lines[0]["checkpoints"][-1]

    done = _run(_rewrite(path, backdated), *trust, cwd=tmp_path)
    assert done.returncode == 1
    assert "its signature is not valid" in done.stderr
    assert _run(path, *trust, cwd=tmp_path).returncode == 0
