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
from pathlib import Path

import typer

from tidegate.commands._common import console, fail, settings

SERVICES = ("policy", "approval", "executor", "planner", "audit")

app = typer.Typer(help="Run Tidegate's services.")
service_app = typer.Typer(help="Run one service in the foreground.", no_args_is_help=True)
app.add_typer(service_app, name="service")


@service_app.command("run")
def run_service(name: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}.")) -> None:
    """Run one service in this process until SIGTERM or Ctrl-C."""
    if name not in SERVICES:
        fail(f"unknown service {name!r}; choose one of {', '.join(SERVICES)}")
    module = importlib.import_module(f"services.{name}.app")
    module.main()


def _run_dir() -> Path:
    return settings().run_dir


def _pidfile() -> Path:
    return _run_dir() / "up.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _supervise(names: tuple[str, ...]) -> None:
    """Start each service as a child process; restart one that dies (with backoff); stop all on signal."""
    run_dir = _run_dir()
    logs, ready = run_dir / "logs", run_dir / "ready"
    logs.mkdir(parents=True, exist_ok=True)
    ready.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"TIDEGATE_READY_DIR": str(ready)}
    children: dict[str, asyncio.subprocess.Process] = {}
    backoff = dict.fromkeys(names, 1.0)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)

    metrics_base = os.environ.get("TIDEGATE_METRICS_PORT")

    async def start(name: str) -> None:
        log = open(logs / f"{name}.log", "ab")  # noqa: SIM115, ASYNC230  (the child keeps it open)
        # With TIDEGATE_METRICS_PORT=<base>, service i of SERVICES serves Prometheus metrics on base + i.
        own = {"TIDEGATE_METRICS_PORT": str(int(metrics_base) + SERVICES.index(name))} if metrics_base else {}
        children[name] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tidegate.cli", "service", "run", name, stdout=log, stderr=subprocess.STDOUT, env=env | own
        )
        log.close()

    for name in names:
        (ready / f"{name}.ready").unlink(missing_ok=True)
        await start(name)
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), 1.0)
        for name, proc in list(children.items()):
            if proc.returncode is not None and not stopping.is_set():
                print(f"{name} exited with {proc.returncode}; restarting in {backoff[name]:.0f}s", flush=True)
                await asyncio.sleep(backoff[name])
                backoff[name] = min(backoff[name] * 2, 30.0)
                await start(name)
    for proc in children.values():
        if proc.returncode is None:
            proc.terminate()
    for name, proc in children.items():
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            print(f"{name} did not stop in 20 s; killing it", flush=True)
            proc.kill()


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
    pidfile = _pidfile()
    if pidfile.exists() and _alive(int(pidfile.read_text())):
        console.print(f"services already running (pid {pidfile.read_text().strip()}); `tidegate down` stops them")
        return
    if not detach:
        pidfile.parent.mkdir(parents=True, exist_ok=True)
        pidfile.write_text(str(os.getpid()))
        try:
            asyncio.run(_supervise(names))
        finally:
            pidfile.unlink(missing_ok=True)
        return
    ready = _run_dir() / "ready"
    for n in names:
        (ready / f"{n}.ready").unlink(missing_ok=True)
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
            if proc.poll() is not None:
                fail(f"supervisor exited with {proc.returncode}; see {_run_dir() / 'logs'}")
            if time.monotonic() > deadline:
                fail(f"not ready after {wait_s:.0f}s: {', '.join(sorted(pending))}; see {_run_dir() / 'logs'}")
            time.sleep(0.2)
    console.print(f"services running (supervisor pid {proc.pid}); logs in {_run_dir() / 'logs'}; stop with `tidegate down`")


@app.command()
def down(timeout_s: float = typer.Option(40.0, "--timeout", help="Seconds to wait for a clean stop.")) -> None:
    """Stop the services started by `tidegate up --detach` (SIGTERM, then wait)."""
    pidfile = _pidfile()
    if not pidfile.exists() or not _alive(pid := int(pidfile.read_text())):
        pidfile.unlink(missing_ok=True)
        console.print("services are not running")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        fail(f"supervisor {pid} still running after {timeout_s:.0f}s")
    console.print("services stopped")
