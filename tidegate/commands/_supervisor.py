"""The supervisor `tidegate up` runs: each service a child process, restarted with backoff when it dies."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from servicekit import EX_CONFIG
from servicekit.health_file import health_path
from tidegate.commands._child_log import LOG_KEEP, LOG_MAX_BYTES, Copy, RotatingLog, start_logged
from tidegate.commands._common import settings
from tidegate.commands._supervised import Child, Supervised, health_url, process_start, record_path, restarts_asked, save, utc_stamp

SERVICES = ("policy", "approval", "executor", "planner", "audit")


@dataclass
class Backoff:
    """How long to wait before restarting a service that died: doubling on each quick death, reset by a healthy run.

    A child that ran at least `healthy_s` before dying was healthy, and so was one that had said it was ready (joined
    its groups, caught up) and ran at least `ready_healthy_s`: it is restarted after `initial_s` again, so one crash a
    day never waits the maximum, nor a service killed from outside (the OOM killer, a node drain, `kill -9`) a few times
    in a minute: five such kills of the executor 20 s apart waited 1, 2, 4, 8 and 16 s, and 236 tasks waited ~2.5 min
    (the SRE game day). One that keeps dying at start-up, or soon after it is ready, waits `initial_s`, then twice that,
    up to `max_s`.
    """

    initial_s: float = 1.0
    max_s: float = 30.0
    healthy_s: float = 60.0
    ready_healthy_s: float = 10.0
    _next_s: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._next_s = self.initial_s

    def after_death(self, ran_s: float, *, was_ready: bool = False) -> float:
        """The delay before the next start of a child that died after running `ran_s` seconds (`was_ready`: it had said so)."""
        if ran_s >= self.healthy_s or (was_ready and ran_s >= self.ready_healthy_s):
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


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_this_process() -> Callable[[], None] | None:
    """A `preexec_fn` that makes a child get SIGTERM when this process dies, even by `kill -9` (Linux; None elsewhere).

    Without it, a supervisor killed outright leaves its services running, unsupervised, holding their ports. The kernel
    sends the signal when the *thread* that forked the child ends: the supervisor forks from its event loop's thread, the
    main thread of `tidegate up`, which lives as long as the process. A supervisor that died between the fork and the
    `prctl` is no longer the child's parent: the child then ends itself at once.
    """
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child, between fork and exec, only calls it
    parent = os.getpid()

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def service_command(name: str) -> list[str]:
    return [sys.executable, "-m", "tidegate.cli", "service", "run", name]


_own_log: list[RotatingLog] = []  # where `say` writes when not on stdout (`saying_into`)


def say(message: str) -> None:
    """One line of the supervisor's log (stdout, or `supervisor.log` when detached), stamped in UTC: it is read during incidents."""
    line = f"{utc_stamp()} {message}"
    if _own_log:
        _own_log[-1].write(f"{line}\n".encode())
    else:
        print(line, flush=True)


@contextlib.contextmanager
def saying_into(path: Path, max_bytes: int = LOG_MAX_BYTES, keep: int = LOG_KEEP, *, follow: tuple[int, ...] = ()) -> Iterator[None]:
    """While in it, `say` writes into `path` rotated as a service's log is (the detached supervisor's `supervisor.log`).

    A disk that refuses it is said once, into the log itself (read once it takes writes again); the supervision goes on.
    `follow` (the supervisor's stdout and stderr) is pointed at the current file: see `RotatingLog`.
    """
    log = RotatingLog(path, max_bytes, keep, say=say, follow=follow)
    _own_log.append(log)
    try:
        yield
    finally:
        _own_log.remove(log)
        log.close()


def _keep(path: Path, record: Supervised) -> None:
    """Save the record `tidegate status` reads; a disk that refuses it is said, and does not stop the supervision."""
    try:
        save(path, record)
    except OSError as exc:
        say(f"cannot write {path} (`tidegate status` reads it): {exc}")


STOP_S = 20.0  # a child asked to stop (by `tidegate down` or `tidegate restart`) is killed if still running after this
_DRAIN_S = 1.0  # how long a dead child's last output may take to reach its log before its death is handled


async def supervise(
    names: tuple[str, ...],
    *,
    make_backoff: Callable[[], Backoff] = Backoff,
    command: Callable[[str], list[str]] = service_command,
    clock: Callable[[], float] = time.monotonic,
    stopping: asyncio.Event | None = None,
    on_restart: Callable[[str, int | None, float | None], None] | None = None,
    log_max_bytes: int = LOG_MAX_BYTES,
    log_keep: int = LOG_KEEP,
) -> None:
    """Start each service as a child process; restart one that dies (with backoff); stop all on signal, or by dying.

    A dead child waits out its own delay while the others are watched as usual (and a stop signal
    during the wait stops at once). A child that exits 0 without being asked (a clean stop: someone sent it
    SIGTERM) did not crash: it is started again at once. A child that exits `EX_CONFIG` (a setting not valid) is not restarted:
    `<run_dir>/ready/<name>.failed` says why (`on_restart` gets no delay), and the supervisor ends when no
    child is left. `tidegate restart NAME` (a file `<run_dir>/restart/<name>`, looked for at each tick) stops that
    child with SIGTERM and starts it again as soon as it has ended, or at once when it waits out a delay or was not restarted.
    Each start, death and restart is a line `say`s (stdout, or a rotated log: `saying_into`) stamped in UTC, and is kept in
    `<run_dir>/up.json` for `tidegate status` (restarts counted). Each child's stdout and stderr go through a pipe
    into `<run_dir>/logs/<name>.log` (mode 0600), rotated at `log_max_bytes` with `log_keep` old ones kept.
    A supervisor killed outright takes its children with it (`die_with_this_process`). Tests pass a short `make_backoff`, a
    `command` and a `stopping` event.
    """
    kit = settings()
    run_dir = kit.run_dir
    logs, ready = run_dir / "logs", run_dir / "ready"
    logs.mkdir(parents=True, exist_ok=True)
    ready.mkdir(parents=True, exist_ok=True)
    restarts_asked(run_dir, names)  # asked of a supervisor before this one: not of this one
    # Unbuffered: what a service prints is in the pipe at once, not lost with it when it is killed (by `kill -9`, or a supervisor gone).
    env = os.environ | {"TIDEGATE_READY_DIR": str(ready), "PYTHONUNBUFFERED": "1"}
    preexec = die_with_this_process()
    children: dict[str, asyncio.subprocess.Process] = {}
    log_of = {name: RotatingLog(logs / f"{name}.log", log_max_bytes, log_keep, say=say) for name in names}
    copies: dict[str, Copy] = {}
    lingering: list[Copy] = []  # copies of children gone whose pipe a process they started still holds
    backoff = {name: make_backoff() for name in names}
    started_at: dict[str, float] = {}
    restart_at: dict[str, float] = {}
    stop_asked: dict[str, float] = {}  # children stopped for `tidegate restart`: when to kill one still running
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

    async def start(name: str, last_exit: int | None = None) -> None:
        (ready / f"{name}.ready").unlink(missing_ok=True)  # a killed child's is still there: this one is not ready yet
        (ready / f"{name}.failed").unlink(missing_ok=True)
        health_path(ready, name).unlink(missing_ok=True)  # a killed child's last health is not this one's
        # With TIDEGATE_METRICS_PORT=<base>, service i of SERVICES serves Prometheus metrics on base + i.
        port = int(metrics_base) + SERVICES.index(name) if metrics_base else None
        own = {"TIDEGATE_METRICS_PORT": str(port)} if port is not None else {}
        lingering[:] = [c for c in lingering if not c.done]
        if name in copies and not copies[name].done:
            lingering.append(copies[name])
        proc, copies[name] = await start_logged(command(name), log_of[name], env=env | own, preexec_fn=preexec)
        children[name] = proc
        started_at[name] = clock()
        before = record.services.get(name)
        record.services[name] = Child(
            state="running",
            pid=proc.pid,
            pid_start=process_start(proc.pid),
            started_at=datetime.now(UTC),
            restarts=0 if before is None else before.restarts + 1,
            last_exit=last_exit if last_exit is not None or before is None else before.last_exit,
            health_url=health_url(kit.metrics_host, port),
        )
        _keep(record_file, record)
        say(f"{name} started (pid {proc.pid})" if before is None else f"{name} restarted (pid {proc.pid}, restart {before.restarts + 1})")

    async def restart_asked(name: str, now: float) -> None:
        """`tidegate restart NAME`: stop it cleanly if it runs; start it at once if it waits out a delay or was given up."""
        proc = children.get(name)
        if proc is None:
            say(f"{name}: restart asked (`tidegate restart`); starting it again")
            await start(name)
        elif name in restart_at:
            say(f"{name}: restart asked (`tidegate restart`); starting it now, not after its delay")
            restart_at[name] = now
        elif name not in stop_asked:
            stop_asked[name] = now + STOP_S
            if proc.returncode is None:
                say(f"{name}: restart asked (`tidegate restart`); stopping it (pid {proc.pid})")
                proc.terminate()

    async def restart_now(name: str, code: int, why: str) -> None:
        say(f"{name} {ended_as(code)} ({why}); starting it again now")
        await start(name, last_exit=code)
        if on_restart is not None:
            on_restart(name, code, 0.0)

    say(f"supervising {', '.join(names)} (pid {os.getpid()}); logs in {logs}")
    for name in names:
        await start(name)
    while not stopping.is_set() and children:  # none left: each one's settings were not valid
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), tick_s)
        if stopping.is_set():
            break
        now = clock()
        for name in restarts_asked(run_dir, names):
            await restart_asked(name, now)
        for name, proc in list(children.items()):
            if name in restart_at:
                if now >= restart_at[name]:
                    del restart_at[name]
                    await start(name)
                continue
            if proc.returncode is None:
                if now >= stop_asked.get(name, math.inf):
                    say(f"{name} did not stop in {STOP_S:.0f} s; killing it")
                    stop_asked[name] = math.inf
                    proc.kill()
                continue
            await copies[name].drained(_DRAIN_S)  # its last lines (the reason it did not start) are in its log
            if stop_asked.pop(name, None) is not None:
                await restart_now(name, proc.returncode, "stopped for `tidegate restart`")
            elif proc.returncode == 0:  # a clean stop the supervisor did not ask for: not a crash, so no backoff
                await restart_now(name, 0, "a clean stop the supervisor did not ask for")
            elif proc.returncode == EX_CONFIG:  # a setting is not valid: restarting cannot fix it, a person must
                del children[name]
                reason = _not_started_reason(logs / f"{name}.log")
                (ready / f"{name}.failed").write_text(reason)
                note(name, state="not started", last_exit=proc.returncode, reason=reason)
                say(f"{name} did not start, and is not restarted: {reason}")
                if on_restart is not None:
                    on_restart(name, proc.returncode, None)
            else:
                delay = backoff[name].after_death(now - started_at[name], was_ready=(ready / f"{name}.ready").exists())
                restart_at[name] = now + delay
                note(name, state="restarting", last_exit=proc.returncode, restart_at=datetime.now(UTC) + timedelta(seconds=delay))
                say(f"{name} {ended_as(proc.returncode)}; restarting in {delay:.0f}s")
                if on_restart is not None:
                    on_restart(name, proc.returncode, delay)
    if children:
        say(f"stopping {', '.join(children)}")
    for proc in children.values():
        if proc.returncode is None:
            proc.terminate()
    for name, proc in children.items():
        try:
            await asyncio.wait_for(proc.wait(), STOP_S)
        except TimeoutError:
            say(f"{name} did not stop in {STOP_S:.0f} s; killing it")
            proc.kill()
    for copy in [*copies.values(), *lingering]:
        if not await copy.drained(_DRAIN_S):
            copy.close()
    for log in log_of.values():
        log.close()
    record_file.unlink(missing_ok=True)
    say("stopped")


def ended_as(code: int | None) -> str:
    """How a child ended, in words: a negative return code is the signal that killed it (`-9`: SIGKILL, the OOM killer's)."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by signal {-code} ({name})"
    return f"exited with {code}"
