"""The logs of `tidegate up` (a platform probe: `.tidegate/logs/*.log` grew for ever, readable by every user, though they
can hold tenant data): each is created 0600, and the supervisor, which copies each child's output, rotates it by size."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
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
        argv: list[str] = []

        def __init__(self, argv: list[str], *args: object, **kwargs: object) -> None:
            Exited.argv = argv

        def poll(self) -> int:
            return 1

    monkeypatch.setattr(services.subprocess, "Popen", Exited)  # the supervisor it starts exits at once: only the file matters here
    done = CliRunner().invoke(app, ["up", "--detach", "--only", "policy"])
    assert done.exit_code == 1
    assert mode(tmp_path / "logs" / "supervisor.log") == 0o600
    assert "--own-log" in Exited.argv  # the supervisor it starts writes (and rotates) supervisor.log itself


def test_a_line_longer_than_the_limit_is_kept_whole_in_a_file_of_its_own(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "policy.log", max_bytes=100, keep=3, say=print)
    for piece in (b"short 1\n", b"y" * 150, b"y" * 100 + b"\n", b"short 2\n"):
        log.write(piece)
    log.close()
    files = [tmp_path / "policy.log.2", tmp_path / "policy.log.1", tmp_path / "policy.log"]
    assert [p.read_bytes() for p in files] == [b"short 1\n", b"y" * 250 + b"\n", b"short 2\n"]


# A disk that refuses writes, in a process of its own: past RLIMIT_FSIZE, a write fails with EFBIG (SIGXFSZ ignored).
REFUSED = """
import json, os, resource, signal, sys
from pathlib import Path
from tidegate.commands._child_log import RotatingLog
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
said = []
path = Path(sys.argv[1])
log = RotatingLog(path, max_bytes=10_000, keep=2, say=said.append)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
fds = len(os.listdir("/proc/self/fd"))
def refused(pieces):
    resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size, hard))  # not one byte more
    for piece in pieces:
        log.write(piece)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
log.write(b"before\\n")
refused([b"refused %02d\\n" % i for i in range(50)])
log.write(b"after\\n")
refused([b"refused again\\n", b"and again\\n"])
log.write(b"last\\n")
print(json.dumps({"said": said, "descriptors_left": len(os.listdir("/proc/self/fd")) - fds}))
log.close()
"""


@pytest.mark.skipif(sys.platform != "linux", reason="counts descriptors in /proc")
def test_a_disk_that_refuses_writes_is_said_once_each_time_and_holds_nothing_up(tmp_path: Path) -> None:
    path = tmp_path / "policy.log"
    done = subprocess.run([sys.executable, "-c", REFUSED, str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no traceback per refused write (what the standard library's handler prints)
    out = json.loads(done.stdout)
    assert [m.split(":", 1)[0] for m in out["said"]] == [f"cannot write {path}"] * 2  # once per time it refuses, not per write
    assert all(m.endswith("the service's output is lost until it can") for m in out["said"])
    assert out["descriptors_left"] == 0  # the stream that failed was closed, not leaked
    assert path.read_bytes() == b"before\nafter\nlast\n"  # what it refused is dropped, nothing of it written later


def test_a_log_that_cannot_be_rotated_grows_on_said_once_each_time(tmp_path: Path) -> None:
    said: list[str] = []
    log = RotatingLog(tmp_path / "policy.log", max_bytes=50, keep=2, say=said.append)
    blocker = tmp_path / "policy.log.2"

    def block() -> None:  # the oldest cannot be removed to make room: a folder with a file in it stands in its place
        blocker.unlink(missing_ok=True)
        blocker.mkdir()
        (blocker / "x").write_text("x")

    lines = [b"line %04d\n" % i for i in range(40)]
    log.write(b"".join(lines[:5]))  # 50 bytes: full
    log.write(lines[5])  # rotated: policy.log.1
    block()
    for line in lines[6:20]:  # each asks for a rotation, refused: the log grows on
        log.write(line)
    assert (tmp_path / "policy.log").read_bytes() == b"".join(lines[5:20])
    (blocker / "x").unlink()
    blocker.rmdir()
    log.write(lines[20])  # rotates again
    block()
    for line in lines[21:40]:
        log.write(line)
    log.close()
    assert [m.split(":", 1)[0] for m in said] == [f"cannot rotate {tmp_path / 'policy.log'}"] * 2
    assert all(m.endswith("; it grows on") for m in said)
    assert lines_of(tmp_path / "policy.log.1", tmp_path / "policy.log") == [f"line {i:04d}" for i in range(5, 40)]
