"""`tidegate status`: each service of the running `tidegate up`: its process, since when, its restarts, what `/health` answers."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import httpx
import typer
from rich.table import Table

from servicekit.health_file import read_health
from tidegate.commands._common import console, err_console, fail, settings
from tidegate.commands._supervised import Child, Supervised, same_process, utc_stamp
from tidegate.commands._supervisor import ended_as
from tidegate.commands.services import left_behind, left_behind_line, read_record, supervisor_pid

__all__ = ["EXIT_NOT_RUNNING", "ServiceStatus", "app", "health_answer", "service_statuses"]

app = typer.Typer(help="Operations: what the services of `tidegate up` are doing.")

EXIT_NOT_RUNNING = 3  # LSB's "program is not running", as `tidegate infra status` and systemctl say it
NO_PROBE = (
    "no /health to ask (TIDEGATE_METRICS_PORT was not set for `tidegate up`): health is what each service's watchdog last"
    " wrote beside its ready file (every 5 s)"
)
HEALTHY = frozenset({"ok", "ready"})  # `ready`: no `/health` to ask and no health written (a service of an older release)


@dataclass(frozen=True)
class ServiceStatus:
    """One supervised service as `status` shows it."""

    service: str
    child: Child
    running: bool  # recorded as running, and its process is there
    health: str  # ok, retrying, starting, unhealthy, unreachable; ready / starting from the ready file; not running; retired Kafka login
    detail: str | None = None  # why not ok: the retried error, the 503's reason, the connection error, the exit

    @property
    def healthy(self) -> bool:
        """Running, and `/health` (or, without one, the ready file) says it serves."""
        return self.running and self.health in HEALTHY

    @property
    def phase(self) -> str:
        """`running`, `restarting`, `not started`, or `exited` (its process is gone, the supervisor has not seen it yet)."""
        if self.running:
            return "running"
        return "exited" if self.child.state == "running" else self.child.state

    def state(self, now: datetime) -> str:
        """The phase, and when a restarting service starts again (`restarting in 8s`)."""
        if self.phase == "restarting" and self.child.restart_at is not None:
            return f"restarting in {max(0.0, (self.child.restart_at - now).total_seconds()):.0f}s"
        return self.phase

    def as_dict(self, now: datetime) -> dict[str, object]:
        """For `--json`."""
        c = self.child
        return {
            "service": self.service, "state": self.phase, "pid": c.pid if self.running else None,
            "started_at": utc_stamp(c.started_at), "up_s": round((now - c.started_at).total_seconds(), 1) if self.running else None,
            "restarts": c.restarts, "last_exit": c.last_exit, "health": self.health, "detail": self.detail, "healthy": self.healthy,
            "probe": c.health_url or "ready file",
        }  # fmt: skip


def health_answer(code: int, body: Any) -> tuple[str, str | None]:
    """What an answer of `/health` means: `ok`, `retrying` (200 while a transient error is retried), `starting`, or `unhealthy`."""
    if not isinstance(body, dict):
        return "unhealthy", f"HTTP {code}, not the JSON of a Tidegate /health"
    if code == 200 and body.get("ok"):
        return ("retrying", str(body["retrying"])) if body.get("retrying") else ("ok", None)
    if body.get("reason") == "starting":
        return "starting", None
    return "unhealthy", str(body.get("reason") or f"HTTP {code}")


async def _ask(client: httpx.AsyncClient, url: str) -> tuple[str, str | None]:
    try:
        answer = await client.get(url)
    except httpx.HTTPError as exc:
        return "unreachable", f"{url}: {type(exc).__name__} {exc}".strip()
    try:
        body = answer.json()
    except ValueError:
        body = None
    return health_answer(answer.status_code, body)


def _last_words(log: Path) -> str | None:
    """The `<service>: not started: …` line a service printed as it ended (the last line of its log), if that is its last line."""
    try:
        with log.open("rb") as lines:
            lines.seek(max(0, lines.seek(0, 2) - 4096))  # the tail alone: a log may be large
            tail = [line.strip() for line in lines.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    return tail[-1] if tail and ": not started: " in tail[-1] else None


def _why_not_running(name: str, child: Child, logs: Path) -> str | None:
    """Why a service is not running: the settings it named, or its exit with the line it printed (backoff after `not started`)."""
    if child.state == "not started":
        return child.reason
    if child.last_exit is None:
        return None
    said = _last_words(logs / f"{name}.log") if child.state == "restarting" else None
    return ended_as(child.last_exit) + (f": {said}" if said else "")


async def _health(client: httpx.AsyncClient, name: str, child: Child, run_dir: Path) -> ServiceStatus:
    running = child.state == "running" and child.pid is not None and same_process(child.pid, child.pid_start)
    if not running:
        return ServiceStatus(name, child, running, "not running", _why_not_running(name, child, run_dir / "logs"))
    if child.health_url is None:
        if (written := read_health(run_dir / "ready", name)) is not None:  # what `/health` would answer, as its watchdog wrote it
            return ServiceStatus(name, child, running, *health_answer(*written))
        ready = (run_dir / "ready" / f"{name}.ready").exists()
        return ServiceStatus(name, child, running, "ready" if ready else "starting")
    return ServiceStatus(name, child, running, *await _ask(client, child.health_url))


RETIRED_LOGIN = "retired Kafka login"


def _kafka_login(found: ServiceStatus, credentials_dir: Path) -> ServiceStatus:
    """`found`, marked when the service's Kafka login file changed after it started (it read its password at start).

    A rotation finished or `--leaked` (no `<principal>.properties.former` left): the password it runs on is retired, the
    broker cuts its connections within `TIDEGATE_KAFKA_SESSION_MAX_S` and refuses it then: not healthy. A rotation under
    way (the former file kept): it still logs in until `--finish`; said, health kept.
    """
    if not found.running:
        return found
    principal = found.service.split(".")[0]  # a copy (`policy.2`) logs in as its service
    path = credentials_dir / f"{principal}.properties"
    try:
        changed = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:  # no file: a password given by TIDEGATE_KAFKA_PASSWORD, or no login at all
        return found
    if changed <= found.child.started_at:
        return found
    restart = f"`tidegate restart {found.service}`"
    if (credentials_dir / f"{principal}.properties.former").exists():
        note = f"its Kafka login was rotated at {utc_stamp(changed)}, after it started: {restart} before `--finish`"
        return replace(found, detail=f"{found.detail}; {note}" if found.detail else note)
    return replace(
        found,
        health=RETIRED_LOGIN,
        detail=f"its Kafka password was retired at {utc_stamp(changed)}, after it started: the broker cuts it off within"
        f" TIDEGATE_KAFKA_SESSION_MAX_S and refuses it then; {restart}",
    )


async def service_statuses(record: Supervised, run_dir: Path, *, timeout_s: float = 2.0) -> list[ServiceStatus]:
    """Each recorded service of `run_dir`, its `/health` asked (all at once, each for at most `timeout_s`), its Kafka login checked."""
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        found = await asyncio.gather(*(_health(client, name, child, run_dir) for name, child in record.services.items()))
    credentials_dir = settings().kafka_credentials_dir
    return [_kafka_login(s, credentials_dir) for s in found]


def _since(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    days, h = divmod(hours, 24)
    return f"{days}d {h}h" if days else f"{h}h {m:02d}m" if hours else f"{m}m {s:02d}s" if minutes else f"{s}s"


def _show(record: Supervised, found: list[ServiceStatus], now: datetime, logs: Path) -> None:
    since = utc_stamp(record.started_at)
    console.print(f"supervisor pid {record.supervisor_pid} (`tidegate up`) since {since}; logs in {logs}", soft_wrap=True)
    view = Table("service", "state", "pid", "up for", "restarts", "health")
    for s in found:
        up_for = _since((now - s.child.started_at).total_seconds()) if s.running else ""
        health = s.health if s.detail is None else f"{s.health}: {s.detail}"
        view.add_row(s.service, s.state(now), str(s.child.pid) if s.running else "", up_for, str(s.child.restarts), health)
    console.print(view)
    if any(s.child.health_url is None for s in found):
        console.print(NO_PROBE, soft_wrap=True)
    unhealthy = [s.service for s in found if not s.healthy]
    console.print(f"not healthy: {', '.join(unhealthy)}" if unhealthy else "all healthy", soft_wrap=True)


def _no_supervisor(run_dir: Path, as_json: bool) -> NoReturn:
    """No `tidegate up` runs: exit 3, or 1 when the services of one that was killed still run, unsupervised."""
    left = left_behind()
    if as_json:
        orphans = {"left_running": [{"service": name, "pid": child.pid} for name, child in left.items()]} if left else {}
        typer.echo(json.dumps({"supervisor_pid": None, "healthy": False, "services": [], **orphans}))
    if left:
        err_console.print(f"{left_behind_line(left)}, unsupervised: `tidegate down` stops them", soft_wrap=True)
        raise typer.Exit(1)
    err_console.print(f"services are not running: no `tidegate up` for {run_dir} (`tidegate up --detach` starts them)", soft_wrap=True)
    raise typer.Exit(EXIT_NOT_RUNNING)


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    timeout_s: float = typer.Option(2.0, "--timeout", min=0.1, help="Seconds to wait for each service's /health."),
) -> None:
    """Each service of the running `tidegate up`: its pid, how long it has run, its restarts and what its /health answers.

    Exit 0 when every one is running and healthy, 1 when one is not (or the supervisor is gone and services it started
    still run), 3 when `tidegate up` is not running.
    """
    run_dir = settings().run_dir
    pid = supervisor_pid()
    if pid is None:
        _no_supervisor(run_dir, as_json)
    record = read_record(run_dir)
    if record is None or record.supervisor_pid != pid:
        fail(f"`tidegate up` (pid {pid}) has recorded no service yet: it has just started, or it predates `tidegate status`")
    now = datetime.now(UTC)
    found = asyncio.run(service_statuses(record, run_dir, timeout_s=timeout_s))
    healthy = all(s.healthy for s in found)
    if as_json:
        services = [s.as_dict(now) for s in found]
        typer.echo(json.dumps({"supervisor_pid": pid, "since": utc_stamp(record.started_at), "healthy": healthy, "services": services}))
    else:
        _show(record, found, now, run_dir / "logs")
    if not healthy:
        raise typer.Exit(1)
