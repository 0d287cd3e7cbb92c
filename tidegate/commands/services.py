"""`tidegate up`, `tidegate down`, `tidegate service run NAME`: run the five services, supervised."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer

from servicekit import EX_CONFIG
from tidegate.commands._common import console, fail, settings
from tidegate.commands._supervised import (
    Child,
    Supervised,
    alive,
    health_url,
    process_start,
    record_path,
    same_process,
    save,
    utc_stamp,
    write_private,
)

SERVICES = ("policy", "approval", "executor", "planner", "audit")

app = typer.Typer(help="Run Tidegate's services.")
service_app = typer.Typer(help="Run one service in the foreground.", no_args_is_help=True)
app.add_typer(service_app, name="service")


@service_app.command("run")
def run_service(name: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}.")) -> None:
    """Run one service in this process until SIGTERM or Ctrl-C."""
    if name not in SERVICES:
        fail(f"unknown service {name!r}; choose one of {', '.join(SERVICES)}")
    from servicekit import run_service as run

    run(name, importlib.import_module(f"services.{name}").build)


def _run_dir() -> Path:
    return settings().run_dir


def _pidfile() -> Path:
    return _run_dir() / "up.pid"


def supervisor_pid() -> int | None:
    """The pid of the running `tidegate up` (detached or not) of this run directory, or None when none runs.

    The pid file holds the supervisor's pid and when it started (`_supervised.process_start`): a file left by a
    supervisor that was killed names no process, even once another process was given its pid (which `down` would
    otherwise stop). A file of the pid alone (written before) is taken on the pid.
    """
    try:
        pid, *start = (int(part) for part in _pidfile().read_text().split())
    except (FileNotFoundError, ValueError):
        return None
    return pid if same_process(pid, start[0] if start else None) else None


def _write_pidfile() -> None:
    """Name this process as the run directory's supervisor: its pid and when it started."""
    pidfile = _pidfile()
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    start = process_start(os.getpid())
    write_private(pidfile, f"{os.getpid()}" + ("" if start is None else f" {start}"))


@dataclass
class Backoff:
    """How long to wait before restarting a service that died: doubling on each quick death, reset by a healthy run.

    A child that ran at least `healthy_s` before dying was healthy: it is restarted after `initial_s`
    again, so one crash a day never waits the maximum. One that keeps dying at start-up waits
    `initial_s`, then twice that, up to `max_s`.
    """

    initial_s: float = 1.0
    max_s: float = 30.0
    healthy_s: float = 60.0
    _next_s: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._next_s = self.initial_s

    def after_death(self, ran_s: float) -> float:
        """The delay before the next start of a child that died after running `ran_s` seconds."""
        if ran_s >= self.healthy_s:
            self._next_s = self.initial_s
        delay = self._next_s
        self._next_s = min(self._next_s * 2, self.max_s)
        return delay


def _not_started_reason(log: Path) -> str:
    """What a service that exited `EX_CONFIG` wrote last (its `not started` line and the settings it names)."""
    try:
        tail = log.read_bytes()[-4096:].decode(errors="replace").splitlines()
    except OSError:
        tail = []
    start = max((i for i, line in enumerate(tail) if "not started:" in line), default=None)
    if start is None:
        return f"a setting is not valid (see {log})"
    return "; ".join(line.strip() for line in tail[start:] if line.strip())


def _service_command(name: str) -> list[str]:
    return [sys.executable, "-m", "tidegate.cli", "service", "run", name]


def _say(message: str) -> None:
    """One line of the supervisor's log (stdout: `supervisor.log` when detached), stamped in UTC: it is read during incidents."""
    print(f"{utc_stamp()} {message}", flush=True)


def _keep(path: Path, record: Supervised) -> None:
    """Save the record `tidegate status` reads; a disk that refuses it is said, and does not stop the supervision."""
    try:
        save(path, record)
    except OSError as exc:
        _say(f"cannot write {path} (`tidegate status` reads it): {exc}")


async def _supervise(
    names: tuple[str, ...],
    *,
    make_backoff: Callable[[], Backoff] = Backoff,
    command: Callable[[str], list[str]] = _service_command,
    clock: Callable[[], float] = time.monotonic,
    stopping: asyncio.Event | None = None,
    on_restart: Callable[[str, int | None, float | None], None] | None = None,
) -> None:
    """Start each service as a child process; restart one that dies (with backoff); stop all on signal.

    A dead child waits out its own delay while the others are watched as usual (and a stop signal
    during the wait stops at once). A child that exits `EX_CONFIG` (a setting not valid) is not restarted:
    `<run_dir>/ready/<name>.failed` says why (`on_restart` gets no delay), and the supervisor ends when no
    child is left. Each start, death and restart is a line on stdout stamped in UTC, and is kept in
    `<run_dir>/up.json` for `tidegate status` (restarts counted). Tests pass a short `make_backoff`, a
    `command` and a `stopping` event.
    """
    kit = settings()
    run_dir = kit.run_dir
    logs, ready = run_dir / "logs", run_dir / "ready"
    logs.mkdir(parents=True, exist_ok=True)
    ready.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"TIDEGATE_READY_DIR": str(ready)}
    children: dict[str, asyncio.subprocess.Process] = {}
    backoff = {name: make_backoff() for name in names}
    started_at: dict[str, float] = {}
    restart_at: dict[str, float] = {}
    if stopping is None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
    tick_s = min(1.0, min(b.initial_s for b in backoff.values()) / 2) if backoff else 1.0

    metrics_base = os.environ.get("TIDEGATE_METRICS_PORT")
    record_file = record_path(run_dir)
    record = Supervised(supervisor_pid=os.getpid(), supervisor_start=process_start(os.getpid()), started_at=datetime.now(UTC))

    def note(name: str, **change: object) -> None:
        record.services[name] = record.services[name].model_copy(update=change)
        _keep(record_file, record)

    async def start(name: str) -> None:
        (ready / f"{name}.ready").unlink(missing_ok=True)  # a killed child's is still there: this one is not ready yet
        (ready / f"{name}.failed").unlink(missing_ok=True)
        log = open(logs / f"{name}.log", "ab")  # noqa: SIM115, ASYNC230  (the child keeps it open)
        # With TIDEGATE_METRICS_PORT=<base>, service i of SERVICES serves Prometheus metrics on base + i.
        port = int(metrics_base) + SERVICES.index(name) if metrics_base else None
        own = {"TIDEGATE_METRICS_PORT": str(port)} if port is not None else {}
        proc = children[name] = await asyncio.create_subprocess_exec(*command(name), stdout=log, stderr=subprocess.STDOUT, env=env | own)
        started_at[name] = clock()
        log.close()
        before = record.services.get(name)
        record.services[name] = Child(
            state="running",
            pid=proc.pid,
            pid_start=process_start(proc.pid),
            started_at=datetime.now(UTC),
            restarts=0 if before is None else before.restarts + 1,
            last_exit=None if before is None else before.last_exit,
            health_url=health_url(kit.metrics_host, port),
        )
        _keep(record_file, record)
        _say(f"{name} started (pid {proc.pid})" if before is None else f"{name} restarted (pid {proc.pid}, restart {before.restarts + 1})")

    _say(f"supervising {', '.join(names)} (pid {os.getpid()}); logs in {logs}")
    for name in names:
        await start(name)
    while not stopping.is_set() and children:  # none left: each one's settings were not valid
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), tick_s)
        if stopping.is_set():
            break
        now = clock()
        for name, proc in list(children.items()):
            if name in restart_at:
                if now >= restart_at[name]:
                    del restart_at[name]
                    await start(name)
            elif proc.returncode == EX_CONFIG:  # a setting is not valid: restarting cannot fix it, a person must
                del children[name]
                reason = _not_started_reason(logs / f"{name}.log")
                (ready / f"{name}.failed").write_text(reason)
                note(name, state="not started", last_exit=proc.returncode, reason=reason)
                _say(f"{name} did not start, and is not restarted: {reason}")
                if on_restart is not None:
                    on_restart(name, proc.returncode, None)
            elif proc.returncode is not None:
                delay = backoff[name].after_death(now - started_at[name])
                restart_at[name] = now + delay
                note(name, state="restarting", last_exit=proc.returncode, restart_at=datetime.now(UTC) + timedelta(seconds=delay))
                _say(f"{name} exited with {proc.returncode}; restarting in {delay:.0f}s")
                if on_restart is not None:
                    on_restart(name, proc.returncode, delay)
    if children:
        _say(f"stopping {', '.join(children)}")
    for proc in children.values():
        if proc.returncode is None:
            proc.terminate()
    for name, proc in children.items():
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            _say(f"{name} did not stop in 20 s; killing it")
            proc.kill()
    record_file.unlink(missing_ok=True)
    _say("stopped")


def _check_metrics_ports(names: tuple[str, ...]) -> None:
    """Refuse, up front, a `TIDEGATE_METRICS_PORT` base that puts a service's port (base + its index) outside 1-65535."""
    base = settings().metrics_port
    if base is None:
        return
    ports = {n: base + SERVICES.index(n) for n in names}
    if outside := [f"{n}'s {p}" for n, p in ports.items() if not 1 <= p <= 65535]:
        highest = 65535 - max(SERVICES.index(n) for n in names)
        fail(
            f"TIDEGATE_METRICS_PORT={base}: `tidegate up` gives service i of {', '.join(SERVICES)} the port base + i, "
            f"and {', '.join(outside)} {'is' if len(outside) == 1 else 'are'} outside 1-65535; set a base from 1 to {highest}",
            code=2,
        )


@app.command()
def up(
    detach: bool = typer.Option(False, "--detach", "-d", help="Run in the background; `tidegate down` stops it."),
    only: list[str] = typer.Option([], "--only", help="Start only these services (repeatable)."),
    wait_s: float = typer.Option(90.0, "--wait", help="With --detach: seconds to wait for every service to be ready."),
) -> None:
    """Start every service, supervised: a service that dies is restarted."""
    names = tuple(only) or SERVICES
    for n in names:
        if n not in SERVICES:
            fail(f"unknown service {n!r}; choose from {', '.join(SERVICES)}")
    _check_metrics_ports(names)
    if (running := supervisor_pid()) is not None:
        console.print(f"services already running (pid {running}); `tidegate down` stops them")
        return
    if not detach:
        _write_pidfile()
        try:
            asyncio.run(_supervise(names))
        finally:
            _pidfile().unlink(missing_ok=True)
        if failed := sorted(n for n in names if (_run_dir() / "ready" / f"{n}.failed").exists()):
            _say(f"error: not started, settings not valid: {', '.join(failed)} (see above)")
            raise typer.Exit(EX_CONFIG)
        return
    ready = _run_dir() / "ready"
    for n in names:
        (ready / f"{n}.ready").unlink(missing_ok=True)
        (ready / f"{n}.failed").unlink(missing_ok=True)
    (_run_dir() / "logs").mkdir(parents=True, exist_ok=True)
    out = open(_run_dir() / "logs" / "supervisor.log", "ab")  # noqa: SIM115
    args = [sys.executable, "-m", "tidegate.cli", "up", *[a for n in only for a in ("--only", n)]]
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    out.close()
    deadline = time.monotonic() + wait_s
    pending = set(names)
    with console.status("starting services…") as status:
        while pending:
            pending = {n for n in pending if not (ready / f"{n}.ready").exists()}
            status.update(f"starting services… waiting for {', '.join(sorted(pending))}" if pending else "ready")
            failed = sorted(n for n in pending if (ready / f"{n}.failed").exists())
            if failed:
                reasons = "; ".join((ready / f"{n}.failed").read_text() for n in failed)
                fail(f"{reasons} (fix it, then `tidegate down` and `tidegate up` again)", code=EX_CONFIG)
            if proc.poll() is not None:
                fail(f"supervisor exited with {proc.returncode}; see {_run_dir() / 'logs'}")
            if time.monotonic() > deadline:
                fail(
                    f"not ready after {wait_s:.0f}s: {', '.join(sorted(pending))}; see {_run_dir() / 'logs'}; the supervisor (pid "
                    f"{proc.pid}) is still running and restarting them: `tidegate status` shows each, `tidegate down` stops them"
                )
            time.sleep(0.2)
    console.print(f"services running (supervisor pid {proc.pid}); logs in {_run_dir() / 'logs'}; stop with `tidegate down`")


@app.command()
def down(timeout_s: float = typer.Option(40.0, "--timeout", help="Seconds to wait for a clean stop.")) -> None:
    """Stop the services started by `tidegate up --detach` (SIGTERM, then wait)."""
    if (pid := supervisor_pid()) is None:
        _pidfile().unlink(missing_ok=True)
        console.print("services are not running")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(pid):
        fail(f"supervisor {pid} still running after {timeout_s:.0f}s")
    console.print("services stopped")
