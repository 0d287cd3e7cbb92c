"""An auditor answers "under which policy" from an export alone: the pack a decision's `policy_version` names.

Decisions name their pack by `policy_version`, `sha256:` of its Cedar files and settings. The text lived only in the
policy service's own table (`policy.policy_versions`), outside the audit chain and every export, and no command
printed it: months later the auditor had a hash and no policy. The export now carries each pack, and a carried pack
proves itself by hashing to its version: one edited in the database is left out (and said), one edited in the file is
named by `verify --archive` and refused by `tidegate audit policy`.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from test_archive import PREFIX, _checkpointed
from typer.testing import CliRunner

from servicekit import Keyring
from services.audit.archive import ArchivePolicy, audit_keys_of, pack_version, read_archive
from services.audit.archive_check import verify_archives
from services.audit.repository import InMemoryAuditLog
from services.audit.retention import archive_log
from services.policy import PackSource
from tidegate.cli import app

DEFAULT_PACK = Path(__file__).resolve().parents[3] / "policies" / "default"


def _pack(source: PackSource, published_by: str) -> ArchivePolicy:
    return ArchivePolicy(version=source.version, files=source.files, settings=source.settings, published_by=published_by)


async def _export(make: Any, tmp_path: Path, policies: list[ArchivePolicy]) -> tuple[Path, Any]:
    log, keys = InMemoryAuditLog(), tmp_path / "keys"
    await _checkpointed(log, [make("tasks", b"{}", offset=i) for i in range(3)], keys)
    path = tmp_path / "export.gz"
    done = await archive_log(log, Keyring.load(keys, "audit"), path, prefix=PREFIX, through=1, keys=audit_keys_of(keys), policies=policies)
    return path, done


def test_the_version_is_the_policy_services_own() -> None:
    source = PackSource.from_dir(DEFAULT_PACK)
    assert pack_version(source.files, source.settings) == source.version


async def test_the_export_carries_the_packs_and_leaves_out_one_edited_in_the_database(make: Any, tmp_path: Path) -> None:
    source = PackSource.from_dir(DEFAULT_PACK)
    genuine = _pack(source, "file:policies/default")
    older = PackSource(files={"financial.cedar": "permit(principal, action, resource);"}, settings={"refund_threshold_usd": 500})
    # a DBA rewrote the stored text of an older pack, leaving its version: it no longer hashes to it
    edited = _pack(older, "alice").model_copy(update={"files": {"financial.cedar": "forbid(principal, action, resource);"}})
    path, done = await _export(make, tmp_path, [edited, genuine])
    assert done.policies == [source.version]
    assert done.policies_left_out == [older.version]
    header, _ = read_archive(path)
    assert [p.version for p in header.policies] == [source.version]
    assert header.policies[0].genuine  # the round trip through the file keeps the bytes its version covers
    assert verify_archives([path], Keyring.load(tmp_path / "keys", "audit")).ok


async def test_a_pack_edited_in_the_file_is_named_and_refused(make: Any, tmp_path: Path) -> None:
    source = PackSource.from_dir(DEFAULT_PACK)
    path, _ = await _export(make, tmp_path, [_pack(source, "file:policies/default")])
    lines = gzip.decompress(path.read_bytes()).splitlines()
    header = json.loads(lines[0])
    name = sorted(header["policies"][0]["files"])[0]
    header["policies"][0]["files"][name] += "\npermit(principal, action, resource);"  # the auditor's copy, loosened
    path.write_bytes(gzip.compress(b"\n".join([json.dumps(header).encode(), *lines[1:]]) + b"\n"))
    report = verify_archives([path], Keyring.load(tmp_path / "keys", "audit"))
    assert not report.ok
    assert any(f"policy pack it carries as {source.version} does not hash" in b.problem for b in report.breaks), report.breaks
    shown = CliRunner().invoke(app, ["audit", "policy", source.version, "--archive", str(path), "--out", str(tmp_path / "pack")])
    assert shown.exit_code == 1
    assert "not evidence" in shown.output
    assert not (tmp_path / "pack").exists()


async def test_the_auditor_reads_the_pack_a_decision_names_from_the_file_alone(make: Any, tmp_path: Path) -> None:
    source = PackSource.from_dir(DEFAULT_PACK)
    path, _ = await _export(make, tmp_path, [_pack(source, "file:policies/default")])
    runner = CliRunner()
    out = tmp_path / "pack"
    shown = runner.invoke(app, ["audit", "policy", source.version[:19], "--archive", str(path), "--out", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "hashes to its version" in shown.output
    assert PackSource.from_dir(out).version == source.version  # the very text the decisions were made under
    missing = runner.invoke(app, ["audit", "policy", "sha256:" + "0" * 64, "--archive", str(path)])
    assert missing.exit_code == 1
    assert source.version in missing.output  # says what the file does hold
