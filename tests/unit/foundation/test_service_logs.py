"""The logs of `tidegate up` (a platform probe: `.tidegate/logs/*.log` grew for ever, readable by every user, though they
can hold tenant data): each is created 0600, and the supervisor, which copies each child's output, rotates it by size."""

from __future__ import annotations

import asyncio
import stat
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tidegate.cli import app
from tidegate.commands import services
from tidegate.commands._child_log import RotatingLog
from tidegate.commands._supervisor import Backoff, supervise


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def lines_of(*paths: Path) -> list[str]:
    return [line for path in paths for line in path.read_text().splitlines()]


def test_a_log_is_rotated_at_a_line_end_once_full_keeping_the_newest_old_ones(tmp_path: Path) -> None:
    said: list[str] = []
    log = RotatingLog(tmp_path / "policy.log", max_bytes=100, keep=2, say=said.append)
    text = b"".join(b"line %04d\n" % i for i in range(60))  # 600 bytes of 10-byte lines
    for start in range(0, len(text), 7):  # pieces that end inside lines, as a pipe hands them over
        log.write(text[start : start + 7])
    log.close()
    path = tmp_path / "policy.log"
    old1, old2 = tmp_path / "policy.log.1", tmp_path / "policy.log.2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.log", "policy.log.1", "policy.log.2"]  # keep=2: no .3
    assert all(p.stat().st_size == 100 for p in (old1, old2))  # rotated at the last line end within the limit
    assert all(p.read_bytes().endswith(b"\n") for p in (old1, old2))  # no line cut in two
    newest = lines_of(old2, old1, path)
    assert newest == [f"line {i:04d}" for i in range(60 - len(newest), 60)]  # in order, nothing missing from what is kept
    assert {mode(p) for p in (path, old1, old2)} == {0o600}
    assert said == []


def test_a_log_left_readable_by_others_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "policy.log"
    path.write_text("written by an older version\n")
    path.chmod(0o644)
    RotatingLog(path, say=print).close()
    assert mode(path) == 0o600
    assert path.read_text() == "written by an older version\n"  # appended to, not replaced


async def test_the_supervisor_rotates_each_service_log_and_keeps_it_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    stopping = asyncio.Event()
    chatty = "import sys\nfor i in range(3000): print(f'record {i:05d} ' + 'x' * 40)\nprint('last words', file=sys.stderr)\nsys.exit(3)"
    await asyncio.wait_for(
        supervise(
            ("policy",),
            make_backoff=lambda: Backoff(initial_s=30, max_s=30),
            command=lambda name: [sys.executable, "-c", chatty],
            stopping=stopping,
            on_restart=lambda name, code, delay: stopping.set(),
            log_max_bytes=40_000,
            log_keep=2,
        ),
        timeout=20,
    )
    logs = tmp_path / "logs"
    kept = [logs / "policy.log.2", logs / "policy.log.1", logs / "policy.log"]
    assert sorted(p.name for p in logs.iterdir()) == sorted(p.name for p in kept)  # 160 kB written, 3 files of 40 kB kept
    assert {mode(p) for p in kept} == {0o600}
    assert all(p.stat().st_size <= 40_000 for p in kept)
    written = lines_of(*kept)
    assert written[-1] == "last words"  # stderr too, and all of it before the death was handled
    assert written[:-1] == [f"record {i:05d} " + "x" * 40 for i in range(3000 - len(written) + 1, 3000)]


def test_up_detached_keeps_the_supervisor_log_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    monkeypatch.delenv("TIDEGATE_METRICS_PORT", raising=False)

    class Exited:
        pid, returncode = 0, 1

        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def poll(self) -> int:
            return 1

    monkeypatch.setattr(services.subprocess, "Popen", Exited)  # the supervisor it starts exits at once: only the file matters here
    done = CliRunner().invoke(app, ["up", "--detach", "--only", "policy"])
    assert done.exit_code == 1
    assert mode(tmp_path / "logs" / "supervisor.log") == 0o600


def test_a_line_longer_than_the_limit_is_kept_whole_in_a_file_of_its_own(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "policy.log", max_bytes=100, keep=3, say=print)
    for piece in (b"short 1\n", b"y" * 150, b"y" * 100 + b"\n", b"short 2\n"):
        log.write(piece)
    log.close()
    files = [tmp_path / "policy.log.2", tmp_path / "policy.log.1", tmp_path / "policy.log"]
    assert [p.read_bytes() for p in files] == [b"short 1\n", b"y" * 250 + b"\n", b"short 2\n"]
