"""`tidegate restart SERVICE`: stop one service of the running `tidegate up` cleanly, start it again at once, wait until it is healthy."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import typer

from servicekit import EX_CONFIG
from tidegate.commands._common import console, fail, settings
from tidegate.commands._supervised import Child, ask_restart
from tidegate.commands._supervisor import SERVICES
from tidegate.commands.services import left_behind, left_behind_line, read_record, supervisor_pid
from tidegate.commands.status import EXIT_NOT_RUNNING, ServiceStatus, service_statuses

__all__ = ["app"]

app = typer.Typer(help="Operations: restart one service of `tidegate up`.")

TAKEN_S = 5.0  # the supervisor looks for a request every second: one not taken by then, it does not understand


@app.command()
def restart(
    service: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}."),
    wait_s: float = typer.Option(90.0, "--wait", min=1.0, help="Seconds to wait for it to be healthy again."),
) -> None:
    """Stop one service of the running `tidegate up` cleanly (SIGTERM) and start it again at once; wait until it is healthy.

    For a key or password rotation, or a service that waits out its backoff or was not started. Exit 0 when it is healthy
    again, 1 when it is not within --wait, 3 when `tidegate up` is not running, 78 when a setting keeps it from starting.
    """
    if service not in SERVICES:
        fail(f"unknown service {service!r}; choose one of {', '.join(SERVICES)}", code=2)
    run_dir = settings().run_dir
    before = _supervised_child(run_dir, service)
    request = ask_restart(run_dir, service)
    deadline = time.monotonic() + wait_s
    if not _taken(request, min(TAKEN_S, wait_s)):
        request.unlink(missing_ok=True)
        fail(f"`tidegate up` did not take the request in {TAKEN_S:.0f}s (an older version?): `tidegate down`, then `tidegate up`")
    with console.status(f"restarting {service}…"):
        found = _wait_healthy(run_dir, service, before, deadline)
    if found.healthy:
        console.print(f"{service} restarted (pid {found.child.pid}) and healthy")
        return
    if found.child.state == "not started":
        fail(f"{service} did not start: {found.detail}", code=EX_CONFIG)
    detail = found.health if found.detail is None else f"{found.health}: {found.detail}"
    fail(f"{service} not healthy {wait_s:.0f}s after the restart ({found.state(datetime.now(UTC))}, {detail}); see {run_dir / 'logs'}")


def _supervised_child(run_dir: Path, service: str) -> Child:
    """What the running supervisor recorded of `service`; the command ends when no supervisor runs or it has no such child."""
    pid = supervisor_pid()
    if pid is None:
        if left := left_behind():
            fail(f"{left_behind_line(left)}, unsupervised: `tidegate down` stops them, then `tidegate up` starts them anew")
        fail(f"services are not running: no `tidegate up` for {run_dir} (`tidegate up --detach` starts them)", code=EXIT_NOT_RUNNING)
    record = read_record(run_dir)
    if record is None or record.supervisor_pid != pid:
        fail(f"`tidegate up` (pid {pid}) has recorded no service yet: it has just started, or it predates `tidegate status`")
    if service not in record.services:
        fail(f"{service} is not one `tidegate up` (pid {pid}) runs; it runs {', '.join(record.services)}")
    return record.services[service]


def _taken(request: Path, timeout_s: float) -> bool:
    """Whether the supervisor took (deleted) the request within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while request.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _wait_healthy(run_dir: Path, service: str, before: Child, deadline: float) -> ServiceStatus:
    """How `service` is once started again after `before`: healthy, given up (`not started`), or as it was at `deadline`."""
    while True:
        record = read_record(run_dir)
        child = None if record is None else record.services.get(service)
        if record is None or child is None:
            fail("`tidegate up` stopped during the restart")
        found = asyncio.run(service_statuses(record.model_copy(update={"services": {service: child}}), run_dir))[0]
        if child.started_at > before.started_at and (found.healthy or child.state == "not started"):
            return found
        if time.monotonic() > deadline:
            return found
        time.sleep(0.2)
