"""A retired audit key verifies only the checkpoints it signed before its retirement (auditor F9).

Whoever holds a leaked, retired audit key and the database could sign checkpoints that `verify` and `verify --archive`
accepted whatever their time. A checkpoint is now judged at the time it signs (v2, auditor F7): one a key signed after its
retirement is refused naming both times; so is one backdated before an earlier checkpoint's time, and a v1 (unsigned
time) checkpoint after a v2 one, which would otherwise carry a leaked key past the check.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from test_archive import PREFIX, _checkpointed
from test_standalone_verifier import _run

from servicekit import Keyring, SigningKey
from servicekit.signing import rotate
from services.audit.archive import audit_keys_of
from services.audit.archive_check import verify_archives
from services.audit.checkpoints import Checkpoint, signed_message, signed_message_v2
from services.audit.repository import InMemoryAuditLog
from services.audit.retention import archive_log
from services.audit.verify import verify_log


def _retire(keys: Path, at: datetime) -> SigningKey:
    """Rotate the audit key, its retirement written as `at`; the retired key as whoever leaked it holds it."""
    leaked = SigningKey("audit", SigningKey.load_or_create(keys, "audit").private)
    rotate(keys, "audit")
    (retired,) = keys.glob("audit.*.retired")
    lines = retired.read_text().splitlines()
    retired.write_text("\n".join([at.isoformat(), *lines[1:]]) + "\n")
    return leaked


def _forged(leaked: SigningKey, like: Checkpoint, checkpoint_id: int, taken_at: datetime, *, v1: bool = False) -> Checkpoint:
    message = (
        signed_message(checkpoint_id, like.heads, like.rows)
        if v1
        else signed_message_v2(checkpoint_id, like.heads, like.rows, like.scope, taken_at)
    )
    return like.model_copy(
        update={"checkpoint_id": checkpoint_id, "taken_at": taken_at, "key_id": leaked.key_id, "signature": leaked.sign(message)}
    )


async def _log(make: Any, keys: Path) -> InMemoryAuditLog:
    log = InMemoryAuditLog()
    await _checkpointed(log, [make("tasks", b"{}", offset=i) for i in range(3)], keys)
    return log


async def test_a_checkpoint_a_key_signed_after_its_retirement_is_refused_naming_both_times(make: Any, tmp_path: Path) -> None:
    log = await _log(make, tmp_path)
    (cp1,) = await log.checkpoints(PREFIX)
    retired_at = cp1.taken_at + timedelta(minutes=1)
    leaked = _retire(tmp_path, retired_at)
    keyring = Keyring.load(tmp_path, "audit")
    assert (await verify_log(log, keyring, prefix=PREFIX)).ok  # what it signed before it was retired still verifies
    later = cp1.taken_at + timedelta(minutes=10)
    assert await log.add_checkpoint(_forged(leaked, cp1, 2, later))
    report = await verify_log(log, keyring, prefix=PREFIX)
    (brk,) = report.breaks
    assert brk.checkpoint_id == 2
    assert f"at {later.isoformat(timespec='seconds')} (the time it signs), after that key was retired at " in brk.problem
    assert retired_at.isoformat(timespec="seconds") in brk.problem


async def test_a_retired_key_cannot_backdate_past_its_retirement(make: Any, tmp_path: Path) -> None:
    """Backdated before the retirement, the forgery signs a time before the checkpoint it follows: refused too."""
    log = await _log(make, tmp_path)
    (cp1,) = await log.checkpoints(PREFIX)
    leaked = _retire(tmp_path, cp1.taken_at + timedelta(minutes=5))
    new_key = SigningKey.load_or_create(tmp_path, "audit")
    genuine = cp1.model_copy(update={"checkpoint_id": 2, "taken_at": cp1.taken_at + timedelta(minutes=20), "key_id": new_key.key_id})
    message = signed_message_v2(2, genuine.heads, genuine.rows, genuine.scope, genuine.taken_at)
    assert await log.add_checkpoint(genuine.model_copy(update={"signature": new_key.sign(message)}))
    keyring = Keyring.load(tmp_path, "audit")
    assert (await verify_log(log, keyring, prefix=PREFIX)).ok
    assert await log.add_checkpoint(_forged(leaked, cp1, 3, cp1.taken_at + timedelta(minutes=1)))
    (brk,) = (await verify_log(log, keyring, prefix=PREFIX)).breaks
    assert brk.checkpoint_id == 3
    assert "before checkpoint 2's" in brk.problem
    v1 = _forged(leaked, cp1, 3, cp1.taken_at + timedelta(minutes=1), v1=True)
    log.stored_checkpoints[(PREFIX, 3)] = v1
    (brk,) = (await verify_log(log, keyring, prefix=PREFIX)).breaks
    assert "signed the pre-Tidegate-21 way (v1: its time not signed)" in brk.problem


async def test_an_archive_judges_a_carried_retired_key_at_its_retirement(make: Any, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    log = await _log(make, keys)
    (cp1,) = await log.checkpoints(PREFIX)
    leaked = _retire(keys, cp1.taken_at + timedelta(minutes=1))
    assert await log.add_checkpoint(_forged(leaked, cp1, 2, cp1.taken_at + timedelta(minutes=10)))
    path = tmp_path / "evidence.jsonl.gz"
    carried = audit_keys_of(keys)
    unaware = Keyring({k.key_id: public for k in carried if (public := k.public()) is not None})  # told no retirement: the forger's
    await archive_log(log, unaware, path, prefix=PREFIX, through=2, keys=carried)
    report = verify_archives([path], Keyring({}), trust=[k.sha256 for k in carried])
    assert any("after that key was retired at" in b.problem for b in report.breaks), report.breaks
    own = _run(path, *(k.sha256 for k in carried), cwd=tmp_path)  # the auditor's own verifier, with no Tidegate
    assert own.returncode == 1
    assert "checkpoint 2: signed by audit-" in own.stderr
    assert "after that key was retired at" in own.stderr
