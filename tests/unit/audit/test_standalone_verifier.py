"""An auditor checks an export with a verifier of his own: the standard library and `cryptography`, no Tidegate.

`examples/verify_audit_export/verify_audit_export.py` follows the byte format docs/audit.md lays down; these tests run
it as a separate, isolated interpreter on files `tidegate audit export` writes (every sample event of the contract,
binary and non-ASCII headers, a key rotation, a policy pack) and hold it to the same verdicts: intact as written, and
an edited row, an edited pack, a re-signed forgery and a key not trusted named. Before, the format was "a
length-prefixed, type-tagged encoding" in prose and the only verifier was Tidegate itself.
"""

from __future__ import annotations

import ast
import base64
import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from test_archive import PREFIX, _checkpointed

from servicekit import Keyring
from servicekit.signing import rotate
from services.audit.archive import ArchivePolicy, audit_keys_of
from services.audit.repository import InMemoryAuditLog
from services.audit.retention import archive_log
from services.audit.rows import Observed
from services.policy import PackSource

REPO = Path(__file__).resolve().parents[3]
VERIFIER = REPO / "examples" / "verify_audit_export" / "verify_audit_export.py"


def _run(path: Path, *trust: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-I", str(VERIFIER), str(path)] + [a for t in trust for a in ("--trust-key", t)]
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=60, check=False)


async def _export(make: Any, sample_records: list[Observed], tmp_path: Path) -> tuple[Path, list[str]]:
    log, keys = InMemoryAuditLog(), tmp_path / "keys"
    odd = [
        make("tasks", '{"note": "réfund ✓"}'.encode(), offset=0, key=b"\xff\x00", headers=[("bin", b"\xff\xfe"), ("t", "é".encode())]),
        make("tasks", b"not json", offset=1, headers=[("none", None)]),
    ]
    await _checkpointed(log, [*sample_records, *odd], keys)
    rotate(keys, "audit")
    await _checkpointed(log, [make("tasks", b"{}", offset=i) for i in range(2, 5)], keys)
    source = PackSource.from_dir(REPO / "policies" / "default")
    pack = ArchivePolicy(version=source.version, files=source.files, settings=source.settings, published_by="file:policies/default")
    path = tmp_path / "evidence.jsonl.gz"
    carried = audit_keys_of(keys)
    await archive_log(log, Keyring.load(keys, "audit"), path, prefix=PREFIX, through=2, keys=carried, policies=[pack])
    return path, [k.sha256 for k in carried]


def _rewrite(path: Path, edit: Any) -> Path:
    lines = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    edit(lines)
    out = path.with_name("edited.jsonl.gz")
    out.write_bytes(gzip.compress(b"\n".join(json.dumps(line).encode() for line in lines) + b"\n"))
    return out


def test_the_verifier_needs_nothing_of_tidegate() -> None:
    tree = ast.parse(VERIFIER.read_text())
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported - set(sys.stdlib_module_names) == {"cryptography"}


async def test_an_export_checks_out_with_the_auditors_own_verifier(make: Any, sample_records: list[Observed], tmp_path: Path) -> None:
    path, (old, new) = await _export(make, sample_records, tmp_path)
    done = _run(path, old, new, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "intact" in done.stdout
    half = _run(path, new, cwd=tmp_path)  # only the key after the rotation: the one before is named, not called forged
    assert half.returncode == 1
    assert "NOT VERIFIED: checkpoint 1: signed by audit-" in half.stderr
    assert "BROKEN" not in half.stderr


async def test_the_auditors_verifier_names_what_was_edited(make: Any, sample_records: list[Observed], tmp_path: Path) -> None:
    path, trust = await _export(make, sample_records, tmp_path)

    def refund_never_happened(lines: list[dict[str, Any]]) -> None:
        row = lines[3]
        row["value"] = base64.b64encode(base64.b64decode(row["value"] or "") + b" ").decode()

    edited = _run(_rewrite(path, refund_never_happened), *trust, cwd=tmp_path)
    assert edited.returncode == 1
    assert "line 4," in edited.stderr
    assert "row edited" in edited.stderr

    def loosened(lines: list[dict[str, Any]]) -> None:
        files = lines[0]["policies"][0]["files"]
        files[sorted(files)[0]] += "\npermit(principal, action, resource);"

    pack = _run(_rewrite(path, loosened), *trust, cwd=tmp_path)
    assert pack.returncode == 1
    assert "does not hash to that version" in pack.stderr

    def cut(lines: list[dict[str, Any]]) -> None:
        del lines[-1]

    assert "is not in the file" in _run(_rewrite(path, cut), *trust, cwd=tmp_path).stderr


async def test_a_forgery_carrying_its_own_key_is_not_trusted(make: Any, tmp_path: Path) -> None:
    forged_log, forger = InMemoryAuditLog(), tmp_path / "forger"
    await _checkpointed(forged_log, [make("tasks", b'{"refund": "never happened"}', offset=i) for i in range(3)], forger)
    path = tmp_path / "forged.jsonl.gz"
    await archive_log(forged_log, Keyring.load(forger, "audit"), path, prefix=PREFIX, through=1, keys=audit_keys_of(forger))
    genuine = "7173da4f1237b6268b88aa02d5d09aab1dd46b1dc44eb5aef73aa56ef397e376"  # the deployment's, handed over apart
    done = _run(path, genuine, cwd=tmp_path)
    assert done.returncode == 1
    assert "a key not trusted here" in done.stderr
