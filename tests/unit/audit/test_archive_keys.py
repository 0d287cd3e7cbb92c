"""An auditor checks an export on a machine without the deployment's keys, after the audit key was rotated.

The file carries the audit's public keys (the retired one with its retirement time); the auditor trusts them only by
the fingerprints the operator handed over apart from the file (`--trust-key`). Before, the file carried no key, and
an auditor with none (or only the current `audit.pub`) read every older checkpoint as `BROKEN: signature is not
valid`: a genuine export called forged, and nothing said which key to fetch. A forger who carries his own key in a
rewritten file gains nothing: a key is never trusted for being in the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_archive import PREFIX, _checkpointed
from typer.testing import CliRunner

from servicekit import Keyring
from servicekit.signing import rotate
from services.audit.archive import audit_keys_of, read_archive
from services.audit.archive_check import verify_archives
from services.audit.repository import InMemoryAuditLog
from services.audit.retention import archive_log
from tidegate.cli import app


async def _export_across_a_rotation(make: Any, tmp_path: Path) -> tuple[Path, list[str]]:
    """A log checkpointed by the audit key, the key rotated, checkpointed by the new one; exported with its keys."""
    log, keys = InMemoryAuditLog(), tmp_path / "deployment-keys"
    await _checkpointed(log, [make("tasks", b"{}", offset=i) for i in range(4)], keys)
    rotate(keys, "audit")
    await _checkpointed(log, [make("tasks", b"{}", offset=i) for i in range(4, 7)], keys)
    carried = audit_keys_of(keys)
    path = tmp_path / "export.gz"
    done = await archive_log(log, Keyring.load(keys, "audit"), path, prefix=PREFIX, through=2, keys=carried)
    assert [k.sha256 for k in done.keys] == [k.sha256 for k in carried]
    return path, [k.sha256 for k in carried]


async def test_the_export_carries_the_audit_keys_and_their_rotation(make: Any, tmp_path: Path) -> None:
    path, _ = await _export_across_a_rotation(make, tmp_path)
    header, _ = read_archive(path)
    retired, current = header.keys
    assert retired.retired_at is not None
    assert current.retired_at is None
    assert [cp.key_id for cp in header.checkpoints] == [retired.key_id, current.key_id]
    assert all(k.public() is not None for k in header.keys)


async def test_an_auditor_without_the_keys_is_told_which_to_trust_not_that_the_export_is_forged(make: Any, tmp_path: Path) -> None:
    path, (old, new) = await _export_across_a_rotation(make, tmp_path)
    nothing = Keyring.load(tmp_path / "auditor-keys", "audit")  # the auditor's machine: no deployment key at all
    report = verify_archives([path], nothing)
    assert not report.ok
    assert report.only_unchecked, report.breaks  # nothing found wrong: not a forgery
    assert all("not shown forged" in b.problem for b in report.breaks)
    assert any(f"--trust-key {old}" in b.problem and "retired" in b.problem for b in report.breaks), report.breaks
    assert any(f"--trust-key {new}" in b.problem for b in report.breaks), report.breaks
    trusted = verify_archives([path], nothing, trust=[old, new.upper()])  # the fingerprints the operator handed over
    assert trusted.ok, trusted.breaks
    half = verify_archives([path], nothing, trust=[new])  # the current key only: the one before the rotation still named
    assert half.only_unchecked
    assert [b.checkpoint_id for b in half.breaks] == [1]


async def test_a_forger_gains_nothing_by_carrying_his_own_key(make: Any, tmp_path: Path) -> None:
    path, fingerprints = await _export_across_a_rotation(make, tmp_path)
    forger_log, forger_keys = InMemoryAuditLog(), tmp_path / "forger-keys"
    await _checkpointed(forger_log, [make("tasks", b'{"refund": "never happened"}', offset=i) for i in range(4)], forger_keys)
    await _checkpointed(forger_log, [make("tasks", b"{}", offset=i) for i in range(4, 7)], forger_keys)
    forged = tmp_path / "forged.gz"
    await archive_log(forger_log, Keyring.load(forger_keys, "audit"), forged, prefix=PREFIX, through=2, keys=audit_keys_of(forger_keys))
    nothing = Keyring.load(tmp_path / "auditor-keys", "audit")
    report = verify_archives([forged], nothing, trust=fingerprints)
    assert not report.ok
    assert verify_archives([path], nothing, trust=fingerprints).ok


def test_the_auditor_checks_it_with_the_cli_on_a_machine_without_the_keys(make: Any, tmp_path: Path, monkeypatch: Any) -> None:
    import asyncio

    path, (old, new) = asyncio.run(_export_across_a_rotation(make, tmp_path))
    monkeypatch.setenv("TIDEGATE_KEYS_DIR", str(tmp_path / "auditor-keys"))
    runner = CliRunner()
    untrusted = runner.invoke(app, ["audit", "verify", "--archive", str(path)])
    assert untrusted.exit_code == 1
    assert "NOT VERIFIED" in untrusted.output, untrusted.output
    assert "BROKEN" not in untrusted.output
    assert f"--trust-key {old}" in untrusted.output.replace("\n", "")
    assert "export.gz, checkpoint 1: checkpoint(s) 1 are signed by audit-" in untrusted.output.replace("\n", "")
    assert "[-1]" not in untrusted.output  # the file named, not a partition that is none
    trusted = runner.invoke(app, ["audit", "verify", "--archive", str(path), "--trust-key", old, "--trust-key", new])
    assert trusted.exit_code == 0, trusted.output
    assert "intact" in trusted.output
    short = runner.invoke(app, ["audit", "verify", "--archive", str(path), "--trust-key", old[:12]])
    assert short.exit_code != 0
    assert "64 hex digits" in short.output
