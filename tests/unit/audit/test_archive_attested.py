"""Whoever holds an export rewrites its header; the auditor, without the deployment's keys folder, must see it.

The header carries the audit keys (a retired one with its `retired_at`) and the policy packs. Before, nothing signed
it: on a machine without the keys folder, a file rewritten to drop the old key's retirement time passed
`verify --archive --trust-key` as intact (and with it any checkpoint that leaked key signed after its retirement),
and a key added or a pack swapped went unseen. The audit key now attests the header, part by part: each rewrite is
refused, the changed part named, by Tidegate and by the auditor's own verifier. A file written before (no attestation)
still reads, said to be not attested.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from test_archive import PREFIX, _checkpointed
from typer.testing import CliRunner

from servicekit import Keyring, SigningKey
from servicekit.signing import rotate
from services.audit.archive import ArchivePolicy, attest, audit_keys_of, pack_version, read_archive
from services.audit.archive_check import verify_archives
from services.audit.repository import InMemoryAuditLog
from services.audit.retention import archive_log
from tidegate.cli import app

REPO = Path(__file__).resolve().parents[3]
VERIFIER = REPO / "examples" / "verify_audit_export" / "verify_audit_export.py"
FILES = {"refunds.cedar": "permit(principal, action, resource);\n"}


async def _export(make: Any, tmp_path: Path) -> tuple[Path, list[str], Path]:
    """An export across a rotation of the audit key, written (and attested) as `tidegate audit export` does."""
    log, keys = InMemoryAuditLog(), tmp_path / "deployment-keys"
    await _checkpointed(log, [make("tasks", b"{}", offset=i) for i in range(4)], keys)
    rotate(keys, "audit")
    await _checkpointed(log, [make("tasks", b"{}", offset=i) for i in range(4, 7)], keys)
    settings = {"max_refund_usd": 500}
    pack = ArchivePolicy(version=pack_version(FILES, settings), files=FILES, settings=settings, published_by="file:policies/default")
    carried = audit_keys_of(keys)
    path = tmp_path / "export.jsonl.gz"
    done = await archive_log(
        log, Keyring.load(keys, "audit"), path, prefix=PREFIX, through=2, keys=carried, policies=[pack],
        attest_with=SigningKey.load_or_create(keys, "audit"),
    )  # fmt: skip
    assert done.attested_by == carried[-1].key_id  # the current key
    return path, [k.sha256 for k in carried], keys


def _rewrite(path: Path, edit: Any) -> Path:
    lines = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    edit(lines[0])
    out = path.with_name("rewritten.jsonl.gz")
    out.write_bytes(gzip.compress(b"\n".join(json.dumps(line, separators=(",", ":")).encode() for line in lines) + b"\n"))
    return out


def _auditor(tmp_path: Path) -> Keyring:
    return Keyring.load(tmp_path / "auditor-keys", "audit")  # a machine without the deployment's keys folder


def _standalone(path: Path, fingerprints: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-I", str(VERIFIER), str(path)] + [a for t in fingerprints for a in ("--trust-key", t)]
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=60, check=False)


def _cli_verify(path: Path, fingerprints: list[str], tmp_path: Path, monkeypatch: Any, *more: str) -> Any:
    """`tidegate audit verify --archive FILE --trust-key …` on the auditor's machine (an empty keys folder)."""
    monkeypatch.setenv("TIDEGATE_KEYS_DIR", str(tmp_path / "auditor-keys"))
    (tmp_path / "auditor-keys").mkdir(exist_ok=True)
    args = ["audit", "verify", "--archive", str(path), *more] + [a for f in fingerprints for a in ("--trust-key", f)]
    return CliRunner().invoke(app, args)


def _drop_retirement(header: dict[str, Any]) -> None:
    for key in header["keys"]:
        key["retired_at"] = None


async def test_a_genuine_export_reads_attested(make: Any, tmp_path: Path) -> None:
    path, fingerprints, _ = await _export(make, tmp_path)
    report = verify_archives([path], _auditor(tmp_path), trust=fingerprints)
    assert report.ok, report.breaks
    assert report.archives[0].header == "attested"
    ran = _standalone(path, fingerprints, tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "header attested by audit-" in ran.stdout


async def test_dropping_a_retired_keys_retirement_time_is_refused_and_named(make: Any, tmp_path: Path) -> None:
    path, fingerprints, _ = await _export(make, tmp_path)
    old = read_archive(path)[0].keys[0]
    assert old.retired_at is not None
    rewritten = _rewrite(path, _drop_retirement)
    report = verify_archives([rewritten], _auditor(tmp_path), trust=fingerprints)
    assert not report.ok
    assert not report.only_unchecked  # a rewrite, not a key this machine lacks
    assert report.archives[0].header == "broken"
    named = [b.problem for b in report.breaks if old.key_id in b.problem]
    assert named, report.breaks
    assert "not as attested" in named[0]
    assert "no retirement time" in named[0]
    ran = _standalone(rewritten, fingerprints, tmp_path)
    assert ran.returncode == 1
    assert f"keys/{old.key_id} is not as attested" in ran.stderr


async def test_a_key_added_to_the_header_is_refused_and_named(make: Any, tmp_path: Path) -> None:
    path, fingerprints, _ = await _export(make, tmp_path)
    mine = SigningKey.load_or_create(tmp_path / "forger", "audit")
    raw = mine.private.public_key().public_bytes_raw()
    added = {
        "key_id": mine.key_id,
        "public_key": base64.b64encode(raw).decode(),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "retired_at": None,
    }
    rewritten = _rewrite(path, lambda header: header["keys"].append(added))
    report = verify_archives([rewritten], _auditor(tmp_path), trust=[*fingerprints, added["sha256"]])
    assert not report.ok
    assert any(f"audit key {mine.key_id} was added" in b.problem for b in report.breaks), report.breaks
    ran = _standalone(rewritten, [*fingerprints, added["sha256"]], tmp_path)
    assert ran.returncode == 1
    assert f"keys/{mine.key_id} was added" in ran.stderr


async def test_a_policy_pack_swapped_for_another_is_refused_and_named(make: Any, tmp_path: Path) -> None:
    path, fingerprints, _ = await _export(make, tmp_path)
    looser = {"max_refund_usd": 50000}
    swapped = {"version": pack_version(FILES, looser), "files": FILES, "settings": looser, "published_by": "file:policies/default"}
    original = read_archive(path)[0].policies[0].version

    def swap(header: dict[str, Any]) -> None:
        header["policies"] = [swapped | {"first_used_at": None}]

    rewritten = _rewrite(path, swap)
    report = verify_archives([rewritten], _auditor(tmp_path), trust=fingerprints)
    assert not report.ok  # the swapped pack hashes to its own version: only the attestation tells
    problems = [b.problem for b in report.breaks]
    assert any(f"policy pack {swapped['version']} was added" in p for p in problems), problems
    assert any(f"policy pack {original} was removed" in p for p in problems), problems


async def test_an_attestation_resigned_by_another_key_is_not_trusted(make: Any, tmp_path: Path) -> None:
    path, fingerprints, _ = await _export(make, tmp_path)
    header, _ = read_archive(path)
    forged = attest(header.model_copy(update={"keys": [k.model_copy(update={"retired_at": None}) for k in header.keys]}),
                    SigningKey.load_or_create(tmp_path / "forger", "audit"))  # fmt: skip
    rewritten = _rewrite(path, lambda doc: doc.update(json.loads(forged.model_dump_json())))
    report = verify_archives([rewritten], _auditor(tmp_path), trust=fingerprints)
    assert not report.ok
    assert report.archives[0].header == "untrusted"


async def test_an_older_file_without_an_attestation_still_reads_said_not_attested(make: Any, tmp_path: Path, monkeypatch: Any) -> None:
    path, fingerprints, _ = await _export(make, tmp_path)
    older = _rewrite(path, lambda header: header.pop("attestation"))
    report = verify_archives([older], _auditor(tmp_path), trust=fingerprints)
    assert report.ok, report.breaks
    assert report.archives[0].header == "unattested"
    result = _cli_verify(older, fingerprints, tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "header not attested" in result.output
    ran = _standalone(older, fingerprints, tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "header NOT attested" in ran.stderr


async def test_a_rewritten_header_is_named_by_the_cli(make: Any, tmp_path: Path, monkeypatch: Any) -> None:
    path, fingerprints, _ = await _export(make, tmp_path)
    rewritten = _rewrite(path, _drop_retirement)
    result = _cli_verify(rewritten, fingerprints, tmp_path, monkeypatch)
    assert result.exit_code == 1, result.output
    assert "BROKEN" in result.output
    assert "was changed after" in result.output


async def test_an_auditor_who_requires_attestation_refuses_a_file_whose_attestation_was_stripped(
    make: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    path, fingerprints, _ = await _export(make, tmp_path)
    stripped = _rewrite(path, lambda header: (header.pop("attestation"), _drop_retirement(header)))
    report = verify_archives([stripped], _auditor(tmp_path), trust=fingerprints, require_attested=True)
    assert not report.ok
    assert any("not attested" in b.problem and "--require-attested" in b.problem for b in report.breaks), report.breaks
    assert verify_archives([path], _auditor(tmp_path), trust=fingerprints, require_attested=True).ok
    result = _cli_verify(stripped, [*fingerprints], tmp_path, monkeypatch, "--require-attested")
    assert result.exit_code == 1, result.output
    assert "--require-attested" in result.output
    args = [sys.executable, "-I", str(VERIFIER), str(stripped), "--require-attested"] + [
        a for t in fingerprints for a in ("--trust-key", t)
    ]
    ran = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False)
    assert ran.returncode == 1
    assert "not attested" in ran.stderr
