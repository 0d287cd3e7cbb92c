"""Whoever holds a leaked, retired audit key forges the checkpoints of an archive or export; the auditor checks it offline.

`verify` judges a checkpoint by the checkpoints before it: a v1 one (its time not signed) after a v2 one, or a v2 one
signing a time before an earlier checkpoint's, is a key's signature made elsewhere. An archive starts after a
checkpoint (`previous`, the one the archive before ends at); the file's own checkpoints must be judged after that one
too, by `tidegate audit verify --archive` and by the auditor's own verifier, or the forger puts his checkpoints in the
file after a prune or in an export of a window, past the check. And rows past the heads the file's last checkpoint
signed are signed by no checkpoint: a file carrying them is not intact, whatever its header says.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from test_archive import PREFIX, _checkpointed
from test_archive_attested import _cli_verify
from test_retired_key_checkpoints import _forged, _retire
from test_standalone_verifier import VERIFIER, _run

from servicekit import Keyring, SigningKey
from services.audit.archive import ArchiveHeader, attest, audit_keys_of, row_from_json, row_to_json
from services.audit.archive_check import verify_archives
from services.audit.checkpoints import Checkpoint, signed_message_v2
from services.audit.handlers import Checkpointer
from services.audit.repository import InMemoryAuditLog
from services.audit.retention import archive_log
from services.audit.verify import verify_log


async def _tick(log: InMemoryAuditLog, key: SigningKey) -> None:
    async def publish(event: Any) -> None:
        return None

    assert await Checkpointer(log, key, publish, PREFIX + "audit.checkpoints", 1.0, prefix=PREFIX).tick() is not None


async def _rotated(make: Any, keys: Path, retired_after: timedelta) -> tuple[InMemoryAuditLog, Checkpoint, SigningKey, SigningKey]:
    """A log whose checkpoint 1 the first audit key signed, then that key retired `retired_after` it: (log, cp1, leaked, current)."""
    log = InMemoryAuditLog()
    await _checkpointed(log, [make("tasks", b"{}", offset=i) for i in range(3)], keys)
    (cp1,) = await log.checkpoints(PREFIX)
    leaked = _retire(keys, cp1.taken_at + retired_after)
    return log, cp1, leaked, SigningKey.load_or_create(keys, "audit")


def _unaware(keys: Path) -> Keyring:
    """The deployment's keys told no retirement: how the forger, holding the database, writes his file."""
    return Keyring({k.key_id: public for k in audit_keys_of(keys) if (public := k.public()) is not None})


async def test_a_v1_forgery_after_the_v2_checkpoint_an_export_starts_after_is_refused(make: Any, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    log = InMemoryAuditLog()
    await _checkpointed(log, [make("tasks", b"{}", offset=i) for i in range(3)], keys)  # checkpoint 1, v2
    (cp1,) = await log.checkpoints(PREFIX)
    leaked = _retire(keys, cp1.taken_at + timedelta(minutes=1))
    await log.append([make("tasks", b"{}", offset=i) for i in range(3, 6)])  # rows the forger wants signed
    await _tick(log, leaked)
    made = (await log.checkpoints(PREFIX))[-1]
    # Signed v1 (its time not signed), stamped before the key's retirement: only its order gives it away.
    forged = _forged(leaked, made, 2, cp1.taken_at + timedelta(seconds=30), v1=True)
    carried = audit_keys_of(keys)
    written = tmp_path / "written.jsonl.gz"
    await archive_log(log, _unaware(keys), written, prefix=PREFIX, through=2, after=1, keys=carried)
    log.stored_checkpoints[(PREFIX, 2)] = forged
    live = await verify_log(log, Keyring.load(keys, "audit"), prefix=PREFIX)
    assert any("signed the pre-Tidegate-21 way" in b.problem for b in live.breaks), live.breaks  # the live log refuses it

    path = tmp_path / "export.jsonl.gz"  # the export of the window after checkpoint 1, its checkpoint 2 the forger's
    lines = [json.loads(line) for line in gzip.decompress(written.read_bytes()).splitlines()]
    lines[0]["checkpoint"] = lines[0]["checkpoints"][-1] = json.loads(forged.model_dump_json())
    path.write_bytes(gzip.compress(b"\n".join(json.dumps(line).encode() for line in lines) + b"\n"))
    report = verify_archives([path], Keyring({}), trust=[k.sha256 for k in carried])
    assert not report.ok
    (brk,) = [b for b in report.breaks if b.checkpoint_id == 2]
    assert "signed the pre-Tidegate-21 way (v1: its time not signed)" in brk.problem
    assert "after checkpoint 1 was signed v2" in brk.problem
    own = _run(path, *(k.sha256 for k in carried), cwd=tmp_path)  # the auditor's own verifier agrees
    assert own.returncode == 1
    assert "checkpoint 2: signed v1" in own.stderr


async def test_a_v2_forgery_backdated_before_the_checkpoint_before_it_is_refused_by_the_auditors_verifier(
    make: Any, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    log, cp1, leaked, new_key = await _rotated(make, keys, timedelta(minutes=5))
    await log.append([make("tasks", b"{}", offset=i) for i in range(3, 5)])
    await _tick(log, new_key)  # checkpoint 2, genuine, by the current key (taken 20 minutes on)
    made2 = (await log.checkpoints(PREFIX))[-1]
    later = cp1.taken_at + timedelta(minutes=20)
    message = signed_message_v2(2, made2.heads, made2.rows, made2.scope, later)
    cp2 = made2.model_copy(update={"taken_at": later, "signature": new_key.sign(message)})
    await log.append([make("tasks", b"{}", offset=i) for i in range(5, 7)])
    await _tick(log, leaked)
    made = (await log.checkpoints(PREFIX))[-1]
    # Backdated to before the retirement, so before checkpoint 2's time too.
    forged = _forged(leaked, made, 3, cp1.taken_at + timedelta(minutes=1))
    carried = audit_keys_of(keys)
    written = tmp_path / "written.jsonl.gz"
    await archive_log(log, _unaware(keys), written, prefix=PREFIX, through=3, keys=carried)
    path = tmp_path / "export.jsonl.gz"
    lines = [json.loads(line) for line in gzip.decompress(written.read_bytes()).splitlines()]
    lines[0]["checkpoints"][1] = json.loads(cp2.model_dump_json())
    lines[0]["checkpoint"] = lines[0]["checkpoints"][2] = json.loads(forged.model_dump_json())
    path.write_bytes(gzip.compress(b"\n".join(json.dumps(line).encode() for line in lines) + b"\n"))
    report = verify_archives([path], Keyring({}), trust=[k.sha256 for k in carried])
    assert [b.checkpoint_id for b in report.breaks] == [3], report.breaks  # Tidegate's verifier refuses it
    assert "before checkpoint 2's" in report.breaks[0].problem
    own = _run(path, *(k.sha256 for k in carried), cwd=tmp_path)
    assert own.returncode == 1, own.stdout
    assert "checkpoint 3: signs a time before checkpoint 2's" in own.stderr


def _append_row_past_the_head(path: Path, out: Path) -> None:
    """A row linked after the last one of its chain, its hash recomputed, the header's row count raised, no attestation."""
    lines = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    header, last = lines[0], lines[-1]
    row = row_from_json(last)
    extra = row._replace(seq=row.seq + 1, kafka_offset=row.kafka_offset + 1, prev_hash=row.hash)
    extra = extra._replace(hash=extra.expected_hash())
    header["rows"] += 1
    header.pop("attestation", None)
    lines.append(row_to_json(extra))
    out.write_bytes(gzip.compress(b"\n".join(json.dumps(line, separators=(",", ":")).encode() for line in lines) + b"\n"))


async def test_a_row_past_the_heads_the_last_checkpoint_signed_is_not_intact(make: Any, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    log = InMemoryAuditLog()
    await _checkpointed(log, [make("tasks", b"{}", offset=i) for i in range(3)], keys)
    carried = audit_keys_of(keys)
    path = tmp_path / "export.jsonl.gz"
    await archive_log(log, Keyring.load(keys, "audit"), path, prefix=PREFIX, through=1, keys=carried)
    assert verify_archives([path], Keyring({}), trust=[k.sha256 for k in carried]).ok
    forged = tmp_path / "forged.jsonl.gz"
    _append_row_past_the_head(path, forged)
    report = verify_archives([forged], Keyring({}), trust=[k.sha256 for k in carried])
    assert not report.ok
    assert any("signed by no checkpoint" in b.problem for b in report.breaks), report.breaks
    own = _run(forged, *(k.sha256 for k in carried), cwd=tmp_path)
    assert own.returncode == 1, own.stdout
    assert "signed by no checkpoint" in own.stderr


async def test_a_header_attested_again_by_the_leaked_retired_key_is_refused_when_the_auditor_names_the_attesting_key(
    make: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    """The retired key's holder drops its `retired_at` and attests the header again with that key itself."""
    keys = tmp_path / "keys"
    log, cp1, leaked, current = await _rotated(make, keys, timedelta(minutes=1))
    await log.append([make("tasks", b"{}", offset=i) for i in range(3, 6)])
    await _tick(log, leaked)
    made = (await log.checkpoints(PREFIX))[-1]
    log.stored_checkpoints[(PREFIX, 2)] = _forged(leaked, made, 2, cp1.taken_at + timedelta(minutes=10))  # after its retirement
    carried = audit_keys_of(keys)
    trusted = [k.sha256 for k in carried]
    (attesting,) = [k.sha256 for k in carried if k.retired_at is None]  # the current key, as `audit export` printed it
    path = tmp_path / "export.jsonl.gz"
    await archive_log(log, _unaware(keys), path, prefix=PREFIX, through=2, keys=carried, attest_with=current)
    genuine = tmp_path / "genuine.jsonl.gz"  # the window before the forgery, as the deployment exported it
    await archive_log(log, Keyring.load(keys, "audit"), genuine, prefix=PREFIX, through=1, keys=carried, attest_with=current)
    refused = verify_archives([path], Keyring({}), trust=trusted, attested_by=[attesting])
    assert any("after that key was retired at" in b.problem for b in refused.breaks), refused.breaks

    lines = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    header = ArchiveHeader.model_validate(lines[0])
    unretired = [k.model_copy(update={"retired_at": None}) for k in header.keys]  # the retirement dropped
    lines[0] = json.loads(attest(header.model_copy(update={"keys": unretired, "attestation": None}), leaked).model_dump_json())
    rewritten = tmp_path / "rewritten.jsonl.gz"
    rewritten.write_bytes(gzip.compress(b"\n".join(json.dumps(line).encode() for line in lines) + b"\n"))
    report = verify_archives([rewritten], Keyring({}), trust=trusted, attested_by=[attesting])
    assert report.archives[0].attested_by == leaked.key_id
    (brk,) = report.breaks
    assert f"its header is attested by {leaked.key_id}" in brk.problem
    assert "not by a key --attested-by names" in brk.problem
    args = [a for t in trusted for a in ("--trust-key", t)] + ["--attested-by", attesting]
    own = subprocess.run([sys.executable, "-I", str(VERIFIER), str(rewritten), *args], capture_output=True, text=True, check=False)
    assert own.returncode == 1, own.stdout
    assert f"its header is attested by {leaked.key_id}" in own.stderr
    assert "not by a key --attested-by names" in own.stderr
    cli = _cli_verify(rewritten, trusted, tmp_path, monkeypatch, "--attested-by", attesting)
    assert cli.exit_code == 1, cli.output
    assert "not by a key --attested-by names" in " ".join(cli.output.split())
    genuine = _cli_verify(path.with_name("genuine.jsonl.gz"), trusted, tmp_path, monkeypatch, "--attested-by", attesting)
    assert genuine.exit_code == 0, genuine.output
    assert f"header attested by {current.key_id} (sha256 {attesting})" in " ".join(genuine.output.split())
