"""The archive format: every column round-trips so each row's hash still verifies; a malformed file is named; chains checked offline."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from servicekit import Keyring, SigningKey
from services.audit.archive import ArchiveError, read_archive, row_from_json, row_to_json
from services.audit.archive_check import verify_archives
from services.audit.handlers import Checkpointer
from services.audit.repository import InMemoryAuditLog
from services.audit.retention import ArchiveRefused, archive_log
from services.audit.rows import Observed
from services.audit.verify import verify_log

PREFIX = "tidegate."


async def _checkpointed(log: InMemoryAuditLog, records: list[Observed], keys: Path) -> None:
    await log.append(records)

    async def publish(event: Any) -> None:
        return None

    checkpointer = Checkpointer(log, SigningKey.load_or_create(keys, "audit"), publish, PREFIX + "audit.checkpoints", 1.0, prefix=PREFIX)
    assert await checkpointer.tick() is not None


async def test_every_sample_row_round_trips_and_still_hashes(sample_records: list[Observed]) -> None:
    rows = InMemoryAuditLog()
    await rows.append(sample_records)
    assert rows.rows
    for row in rows.rows:
        back = row_from_json(json.loads(json.dumps(row_to_json(row))))
        assert back == row
        assert back.expected_hash() == back.hash


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b"not gzip", "not a whole gzip file"),
        (gzip.compress(b'{"format": "something else"}\n'), "line 1 is not an audit archive's header"),
        (gzip.compress(b""), "empty"),
    ],
    ids=["not-gzip", "other-header", "empty"],  # not the bytes: gzip stamps the time, and each pytest-xdist worker collects its own
)
def test_a_file_that_is_not_an_archive_is_named(tmp_path: Path, content: bytes, named: str) -> None:
    path = tmp_path / "a.gz"
    path.write_bytes(content)
    with pytest.raises(ArchiveError, match=named):
        read_archive(path)


def test_a_row_missing_a_column_is_named() -> None:
    with pytest.raises(ArchiveError, match="exactly the log's columns"):
        row_from_json({"topic": "t"})


async def test_archive_prune_verify_in_memory_and_offline(make: Any, tmp_path: Path) -> None:
    log, keys = InMemoryAuditLog(), tmp_path / "keys"
    await _checkpointed(log, [make("tasks", b"{}", offset=i) for i in range(6)], keys)
    await _checkpointed(log, [make("tasks", b"{}", offset=i) for i in range(6, 9)], keys)
    keyring = Keyring.load(keys, "audit")
    done = await archive_log(log, keyring, tmp_path / "a1.gz", prefix=PREFIX, through=1)
    assert (done.rows, done.prunable_rows) == (6, 5)
    assert await log.prune(PREFIX, 1, done.sha256, done.prunable_rows) == 5
    report = await verify_log(log, keyring, prefix=PREFIX)
    assert report.ok, report.breaks
    assert (report.rows, report.kept_from, report.rows_before) == (4, 1, 5)
    done2 = await archive_log(log, keyring, tmp_path / "a2.gz", prefix=PREFIX, through=2)
    assert (done2.rows, done2.previous_checkpoint_id) == (3, 1)
    both = verify_archives([tmp_path / "a2.gz", tmp_path / "a1.gz"], keyring)
    assert both.ok, both.breaks
    alone = verify_archives([tmp_path / "a2.gz"], keyring)
    assert alone.ok
    assert alone.archives[0].after_checkpoint == 1
    with pytest.raises(LookupError, match="pruned through checkpoint 1"):
        await archive_log(log, keyring, tmp_path / "a3.gz", prefix=PREFIX, through=1)


async def test_a_truncated_or_foreign_archive_is_named(make: Any, tmp_path: Path) -> None:
    log, keys = InMemoryAuditLog(), tmp_path / "keys"
    await _checkpointed(log, [make("tasks", b"{}", offset=i) for i in range(6)], keys)
    keyring = Keyring.load(keys, "audit")
    path = tmp_path / "a1.gz"
    await archive_log(log, keyring, path, prefix=PREFIX, through=1)
    lines = gzip.decompress(path.read_bytes()).splitlines()
    path.write_bytes(gzip.compress(b"\n".join(lines[:-1]) + b"\n"))  # the last row cut off
    report = verify_archives([path], keyring)
    assert not report.ok
    assert any("signed head seq 6" in b.problem for b in report.breaks), report.breaks
    assert any("holds 5 rows, its header says 6" in b.problem for b in report.breaks)
    other = verify_archives([path], Keyring.load(tmp_path / "elsewhere", "audit"))  # not this deployment's key
    assert any("signature is not valid" in b.problem for b in other.breaks)


async def test_a_broken_chain_refuses_to_archive_and_leaves_no_file(make: Any, tmp_path: Path) -> None:
    log, keys = InMemoryAuditLog(), tmp_path / "keys"
    await _checkpointed(log, [make("tasks", b"{}", offset=i) for i in range(6)], keys)
    log.rows[2] = log.rows[2]._replace(value=b'{"edited": 1}')
    with pytest.raises(ArchiveRefused, match="seq 3"):
        await archive_log(log, Keyring.load(keys, "audit"), tmp_path / "a.gz", prefix=PREFIX, through=1)
    assert list(tmp_path.glob("a.gz*")) == []
