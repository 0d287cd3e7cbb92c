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
from pathlib import Path

import typer
from pydantic import ValidationError

from servicekit import EX_CONFIG
from tidegate.commands._child_log import open_private_log
from tidegate.commands._common import console, fail, settings
from tidegate.commands._supervised import (
    Child,
    Supervised,
    alive,
    left_running,
    load,
    process_start,
    record_path,
    same_process,
    write_private,
)
from tidegate.commands._supervisor import SERVICES, say, saying_into, supervise

__all__ = ["SERVICES", "app", "left_behind", "left_behind_line", "read_record", "supervisor_pid"]

app = typer.Typer(help="Run Tidegate's services.")
service_app = typer.Typer(help="Run one service in the foreground.", no_args_is_help=True)
app.add_typer(service_app, name="service")


def _say_misspelt(say: Callable[[str], None]) -> None:
    """Each `TIDEGATE_*` variable of the environment that no setting reads but looks like one (a typo ignored in silence)."""
    from tidegate.commands._misspelt import misspelt_settings

    for line in misspelt_settings(dict(os.environ)):
        say(line)


@service_app.command("run")
def run_service(name: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}.")) -> None:
    """Run one service in this process until SIGTERM or Ctrl-C."""
    if name not in SERVICES:
        fail(f"unknown service {name!r}; choose one of {', '.join(SERVICES)}")
    from servicekit import run_service as run

    _say_misspelt(lambda line: print(f"{name}: warning: {line}", file=sys.stderr, flush=True))  # into the service's own log

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


def read_record(run_dir: Path) -> Supervised | None:
    """The supervisor's record of its children (`up.json`), or None; one that cannot be read ends the command with why."""
    try:
        return load(record_path(run_dir))
    except (OSError, ValidationError) as exc:
        fail(f"cannot read {record_path(run_dir)}: {exc}")


def left_behind() -> dict[str, Child]:
    """The services a supervisor that is gone (killed with `kill -9`) left running: `up.json` names each by pid and start.

    Call it when `supervisor_pid()` is None. Since the supervisor gives each child a parent-death signal, these are rare:
    a supervisor of an older version, or a system without it.
    """
    record = read_record(_run_dir())
    return {} if record is None else left_running(record.services)


def left_behind_line(left: dict[str, Child]) -> str:
    """`supervisor gone, 2 services still running (pids 101 policy, 102 audit)`."""
    pids = ", ".join(f"{child.pid} {name}" for name, child in left.items())
    return f"supervisor gone, {len(left)} service{'s' if len(left) > 1 else ''} still running (pids {pids})"


def _write_pidfile() -> None:
    """Name this process as the run directory's supervisor: its pid and when it started."""
    pidfile = _pidfile()
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    start = process_start(os.getpid())
    write_private(pidfile, f"{os.getpid()}" + ("" if start is None else f" {start}"))


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


_SETTLE_S = 10.0  # after one service failed to start: how long `up --detach` waits for the others' verdicts


def _not_started(failed: list[str], starting: set[str], ready: Path) -> str:
    """Every service not started and why (each a settings fix), and those still starting when `up --detach` gave up on them."""
    reasons = "; ".join((ready / f"{n}.failed").read_text() for n in failed)
    still = f"; still starting: {', '.join(sorted(starting))} (`tidegate status` shows each)" if starting else ""
    return f"{reasons}{still} (fix it, then `tidegate down` and `tidegate up` again)"


@app.command()
def up(
    detach: bool = typer.Option(False, "--detach", "-d", help="Run in the background; `tidegate down` stops it."),
    only: list[str] = typer.Option([], "--only", help="Start only these services (repeatable)."),
    wait_s: float = typer.Option(90.0, "--wait", help="With --detach: seconds to wait for every service to be ready."),
    own_log: bool = typer.Option(False, "--own-log", hidden=True, help="What --detach starts: say into logs/supervisor.log, rotated."),
) -> None:
    """Start every service, supervised: a service that dies is restarted."""
    names = tuple(only) or SERVICES
    for n in names:
        if n not in SERVICES:
            fail(f"unknown service {n!r}; choose from {', '.join(SERVICES)}")
    _check_metrics_ports(names)
    if not own_log:  # said once, where it was started (each service's log says it too)
        _say_misspelt(lambda line: console.print(f"[yellow]warning:[/] {line}", markup=True, soft_wrap=True))
    if (running := supervisor_pid()) is not None:
        console.print(f"services already running (pid {running}); `tidegate down` stops them")
        return
    if left := left_behind():  # a second set would only crash-loop on their ports
        fail(f"{left_behind_line(left)}, unsupervised: `tidegate down` stops them, then `tidegate up` starts them anew")
    if not detach:
        _write_pidfile()
        (_run_dir() / "logs").mkdir(parents=True, exist_ok=True)
        # Detached, the supervisor's stdout and stderr (what it prints outside `say`: a traceback) follow its rotated log.
        saying = saying_into(_run_dir() / "logs" / "supervisor.log", follow=(1, 2)) if own_log else contextlib.nullcontext()
        with saying:
            try:
                asyncio.run(supervise(names))
            finally:
                _pidfile().unlink(missing_ok=True)
            if failed := sorted(n for n in names if (_run_dir() / "ready" / f"{n}.failed").exists()):
                say(f"error: not started, settings not valid: {', '.join(failed)} (see above)")
                raise typer.Exit(EX_CONFIG)
        return
    ready = _run_dir() / "ready"
    for n in names:
        (ready / f"{n}.ready").unlink(missing_ok=True)
        (ready / f"{n}.failed").unlink(missing_ok=True)
    (_run_dir() / "logs").mkdir(parents=True, exist_ok=True)
    out = open_private_log(_run_dir() / "logs" / "supervisor.log")  # what it prints before it opens the log itself (`--own-log`)
    args = [sys.executable, "-m", "tidegate.cli", "up", "--own-log", *[a for n in only for a in ("--only", n)]]
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    os.close(out)
    deadline = time.monotonic() + wait_s
    pending = set(names)
    settled_by: float | None = None  # once one service failed: until when the others may still fail or get ready
    with console.status("starting services…") as status:
        while pending:
            pending = {n for n in pending if not (ready / f"{n}.ready").exists()}
            status.update(f"starting services… waiting for {', '.join(sorted(pending))}" if pending else "ready")
            failed = sorted(n for n in pending if (ready / f"{n}.failed").exists())
            if failed:
                # the others start from the same settings: wait for their verdicts so one run names every fix
                settled_by = settled_by or min(deadline, time.monotonic() + _SETTLE_S)
                if set(failed) == pending or time.monotonic() > settled_by or proc.poll() is not None:
                    fail(_not_started(failed, pending - set(failed), ready), code=EX_CONFIG)
            elif proc.poll() is not None:
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
        if left := left_behind():
            _stop_left_behind(left, timeout_s)
        else:
            console.print("services are not running")
        _pidfile().unlink(missing_ok=True)
        record_path(_run_dir()).unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(pid):
        fail(f"supervisor {pid} still running after {timeout_s:.0f}s")
    console.print("services stopped")


def _stop_left_behind(left: dict[str, Child], timeout_s: float) -> None:
    """SIGTERM each service a dead supervisor left running (taken on its pid and start), then wait for all to end."""
    console.print(f"{left_behind_line(left)}: stopping them", soft_wrap=True)
    for child in left_running(left).values():  # each taken again on its pid and start, just before the signal
        if child.pid is not None:  # always: `left_running` takes only children with a pid
            os.kill(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while (running := left_running(left)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if running:
        fail(f"{left_behind_line(running)} {timeout_s:.0f}s after SIGTERM")
    console.print("services stopped")
