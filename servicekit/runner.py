"""Run one service as a process: connect, migrate, consume, serve HTTP, watch its own progress, stop cleanly on SIGTERM.

Each service's `app.build(kit, settings, deps=None)` is its one composition root: it builds every
dependency once (the repositories on a pool that is not connected yet, or the in-memory twins a test,
benchmark, replay or what-if passes as `deps`) and returns a `ServiceProcess`, whose `start` connects
the pool before any consumer runs. `run_service(name, build)` is every service's `python -m` entry point.

A service that stops making progress (a dead producer, a stalled fetch, a handler stuck or retrying
past `handler_limit_s`) says so on `/health` and exits with `EXIT_STALLED`, for its supervisor
(`tidegate up`) to restart it; its uncommitted records are then read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import json
import logging
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Self

import asyncpg
from aiokafka.errors import GroupAuthorizationFailedError, KafkaError, TopicAuthorizationFailedError
from pydantic import ValidationError
from pydantic_settings import SettingsError

from servicekit.broker_outage import BrokerWatch
from servicekit.bus import Bus
from servicekit.bus_history import BehindTheBus, HistoryNotReadable
from servicekit.catalog import CatalogError
from servicekit.clock import BrokerClock
from servicekit.control import ControlState
from servicekit.db import SchemaNotReady, SessionReset, check_migrations, discard_broken_connections, open_pool, unopened_pool
from servicekit.db_outage import DatabaseWatch, database_address, retry_level
from servicekit.dbroles import service_database_url
from servicekit.health import serve_metrics_and_health
from servicekit.health_file import health_path, write_health
from servicekit.logfilter import limit_repeats
from servicekit.metrics import observe_broker_silence, observe_clock_offset
from servicekit.printable import OneLineFormatter
from servicekit.release import RELEASE, commit, describe
from servicekit.session_ends import hold_session_ends
from servicekit.settings import EX_CONFIG, KitSettings, SettingNotUsable, settings_problems
from servicekit.tracing import install_tracing

__all__ = ["EXIT_STALLED", "ServiceProcess", "configure_logging", "every", "run_service", "tune_gc"]

EXIT_STALLED = 75  # EX_TEMPFAIL: alive but not making progress; restart me

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]


async def every(interval_s: float, what: str, step: Callable[[], Awaitable[object]], *, at_start: bool = False) -> None:
    """Run `step` every `interval_s` forever (first right away with `at_start`, else after one interval): a service's sweep.

    A step that fails is logged with `what` and tried again at the next round: a sweep must never stop the service. A
    database error met while the service's outage line stands for it is logged at DEBUG (`servicekit.db_outage`).
    """
    if not at_start:
        await asyncio.sleep(interval_s)
    while True:
        try:
            await step()
        except Exception as exc:  # a database error while the outage line stands for it: DEBUG, no traceback
            level = retry_level(exc, logging.ERROR)
            log.log(level, "%s failed; retrying in %.1fs", what, interval_s, exc_info=level > logging.DEBUG)
        await asyncio.sleep(interval_s)


class _UtcFormatter(OneLineFormatter):
    """`2026-12-04T02:43:50.714Z INFO name: message`: ISO 8601 in UTC whatever the host's TZ, as `tidegate up` stamps its own lines.

    A record is one line: what its message quotes of an event is escaped (`OneLineFormatter`).
    """

    converter = time.gmtime  # type: ignore[assignment]  # typeshed matches gmtime's no-argument overload
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"


class _JsonFormatter(_UtcFormatter):
    """One JSON object a line (`time`, `level`, `logger`, `message`, and `exception` with its traceback) for a log collector."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """One log format for every service: `text` lines stamped in UTC, or `json` objects (`TIDEGATE_LOG_FORMAT`)."""
    handler = logging.StreamHandler()
    handler.setFormatter(_JsonFormatter() if log_format == "json" else _UtcFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    for noisy in ("aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    hold_session_ends()  # the broker ending a login every 5 min: one INFO line, not aiokafka's ERRORs
    limit_repeats()  # a broker away: aiokafka's reconnect errors, once and then counted (`servicekit.logfilter`)


# Young-generation size before a collection (CPython's default is 700). Services allocate many short-lived
# objects per event; a larger nursery means far fewer collections, each still cheap.
GC_GEN0_THRESHOLD = 20_000


def tune_gc() -> None:
    """Make garbage collection cheap for a long-running service; call once, after start-up.

    Everything alive after start-up (modules, models, schemas, the compiled policy pack) lives as long
    as the process, so it is frozen out of the collector's scans (`gc.freeze`); the young generation
    is made larger. On the policy service this alone took a decision from 0.54 to 0.39 ms of CPU
    (`bench/policy_bench.py`), and the audit's ingest went from about 10,000 to 11,000–13,000 events/s.
    Everything made later is collected as before; a start-up object that becomes garbage is still
    freed by reference counting, unless it is in a cycle (a one-off, bounded by what start-up made).
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


@dataclass
class ServiceProcess:
    """Everything one running service holds; `app.py` of each service builds one (a subclass names its domain objects)."""

    name: str
    bus: Bus
    database_url: str | None = None
    pool: asyncpg.Pool | None = None  # built unopened with the repositories on it; `start` connects it first
    schema: str | None = None
    migrations: Path | None = None
    control: ControlState | None = None
    http_app: Any | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 0
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    ready_dir: Path | None = None
    stall_after_s: float = 120.0
    handler_limit_s: float = 300.0
    max_clock_skew_s: float = 30.0
    watch_interval_s: float = 5.0
    on_start: list[Callable[[ServiceProcess], Awaitable[None]]] = field(default_factory=list)
    on_stop: list[Callable[[ServiceProcess], Awaitable[None]]] = field(default_factory=list)
    # Topics of state besides `control` read to their end before `on_caught_up` runs and before HTTP is served (`directory`).
    caught_up_on: tuple[str, ...] = ()
    on_caught_up: list[Callable[[ServiceProcess], Awaitable[None]]] = field(default_factory=list)
    # Periodic work (sweeps, checkpoints): each runs as a task from start (after the consumers) until stop, which cancels it.
    loops: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    _loop_tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False)
    _http: Any = field(default=None, init=False)
    _http_task: asyncio.Task[None] | None = field(default=None, init=False)
    _http_listener: socket.socket | None = field(default=None, init=False)  # bound by `start` before the bus, served by `_start`
    stalled: str | None = field(default=None, init=False)
    _health_server: Any = field(default=None, init=False)
    started: bool = field(default=False, init=False)  # True once `start` returned; `/health` says `starting` until then
    database: DatabaseWatch | None = field(default=None, init=False)  # once the pool is open: an outage said once, and its end

    @classmethod
    def of(cls, kit: KitSettings, name: str, bus: Bus, *, pool: asyncpg.Pool | None, migrations: Path | None = None, **more: Any) -> Self:
        """A service process with the kit's settings (stall limits, metrics port, ready directory) and the given pool."""
        return cls(
            name=name,
            bus=bus,
            database_url=service_database_url(kit, name) if pool is not None else None,
            pool=pool,
            schema=name if migrations is not None else None,
            migrations=migrations,
            stall_after_s=kit.stall_after_s,
            handler_limit_s=kit.handler_limit_s,
            max_clock_skew_s=kit.max_clock_skew_s,
            metrics_port=kit.metrics_port,
            metrics_host=kit.metrics_host,
            ready_dir=kit.ready_dir,
            **more,
        )

    @staticmethod
    def pool_of(kit: KitSettings, name: str, max_size: int | None = None, *, session_state: SessionReset = False) -> asyncpg.Pool:
        """The service's pool, not connected yet: build the repositories on it; `start` connects it.

        A service whose code holds session state on a pooled connection (a session advisory lock, a
        `SET` without `LOCAL`, `LISTEN`) passes `session_state=True`, so that asyncpg resets each
        connection it releases; one whose only such state is session advisory locks passes
        `session_state="advisory_locks"`, so that the reset ends those alone; the others skip that round trip
        (tests/unit/foundation/test_pool_reset.py).
        """
        return unopened_pool(service_database_url(kit, name), max_size=max_size or kit.db_pool_max, reset_session=session_state)

    async def start(self) -> None:
        """Serve the probes, connect to PostgreSQL (check the schema's version), start consuming, catch up on `control`, serve HTTP.

        Between the catch-up (on `control` and `caught_up_on`) and HTTP, the `on_caught_up` hooks run: work that needs the
        state those topics hold and the bus to publish on.

        `/health` and `/metrics` come first (`/health` 503 `starting` until started), and the HTTP port is bound with them:
        a port taken fails the start before the service joins any consumer group (a crash-looping copy would otherwise
        make the running ones rebalance at every try), and a probe sees a start that hangs. A connection to the HTTP port
        made during the start waits in its backlog until the service serves it.
        """
        if self.metrics_port is not None and self._health_server is None:
            with _naming_the_port(self.metrics_host, self.metrics_port, "TIDEGATE_METRICS_PORT"):
                self._health_server = serve_metrics_and_health(self.metrics_port, self.health, addr=self.metrics_host)
        try:
            if self.http_app is not None and self._http_listener is None:
                # Each service's own settings take the prefix `TIDEGATE_<NAME>_` (services/<name>/settings.py).
                with _naming_the_port(self.http_host, self.http_port, f"TIDEGATE_{self.name.upper()}_HTTP_PORT"):
                    self._http_listener = _listen(self.http_host, self.http_port)  # here: uvicorn would bind it after the bus
            await self._start()
        except BaseException:
            self._close_health_server()  # a start that failed serves no probe: the process is about to end, or to try again
            self._close_http_listener()
            raise

    async def _start(self) -> None:
        if self.pool is not None:
            await open_pool(self.pool, self.database_url or "the service's database")
            pool = self.pool
            where = database_address(self.database_url or "")
            self.database = DatabaseWatch(self.name, pool, where, held=lambda: self.bus.liveness.in_flight)
            self.bus.on_transient = discard_broken_connections(pool, self.name, self.database.failed)
            if self.schema and self.migrations:
                await check_migrations(pool, self.schema, self.migrations)
        for hook in self.on_start:
            await hook(self)
        await self.bus.start()
        if self.control is not None:
            await self.bus.wait_caught_up("control", while_progressing=True)
        for topic in self.caught_up_on:
            await self.bus.wait_caught_up(topic, while_progressing=True)
        if self.control is not None or self.caught_up_on:
            self.bus.save_checkpoints()  # the next start resumes here (with `TIDEGATE_START_CHECKPOINTS`)
        for hook in self.on_caught_up:
            await hook(self)
        self._loop_tasks = [asyncio.create_task(loop(), name=f"{self.name}-{loop.__name__}") for loop in self.loops]
        if self.http_app is not None:
            import uvicorn

            from servicekit._http_serving import QuietServer

            # The client address is the TCP peer: uvicorn's default trusts `X-Forwarded-For` from 127.0.0.1, so any local
            # process (or a proxy on the host) named itself any address and walked past the per-address rate limit.
            config = uvicorn.Config(
                self.http_app, host=self.http_host, port=self.http_port, log_level="warning", lifespan="off", proxy_headers=False
            )
            self._http = QuietServer(config)
            self._http.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # we own signals
            listener, self._http_listener = self._http_listener, None  # uvicorn closes it when it stops
            assert listener is not None, "bound by `start`"
            self._http_task = asyncio.create_task(self._http.serve(sockets=[listener]))
            while not self._http.started:
                if self._http_task.done():
                    self._http_task.result()
                await asyncio.sleep(0.02)
        if self.ready_dir is not None:
            self.ready_dir.mkdir(parents=True, exist_ok=True)
            (self.ready_dir / f"{self.name}.ready").write_text(self.http_url if self._http is not None else "ok")
        self.started = True
        log.info("%s started: %s", self.name, describe())

    async def stop(self) -> None:
        """Stop in reverse order; in-flight batches finish before offsets are committed, then the loops are cancelled."""
        if self._http is not None and self._http_task is not None:
            self._http.ask_exit()
            await self._http_task
        if self.ready_dir is not None:
            (self.ready_dir / f"{self.name}.ready").unlink(missing_ok=True)
            health_path(self.ready_dir, self.name).unlink(missing_ok=True)
        self._close_health_server()
        await self.bus.stop()
        self.bus.save_checkpoints()
        for task in self._loop_tasks:
            task.cancel()
        for task in self._loop_tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loop_tasks = []
        for hook in reversed(self.on_stop):
            await hook(self)
        if self.database is not None:
            await self.database.close()
        if self.pool is not None:
            await self.pool.close()
        log.info("%s stopped", self.name)

    def _close_http_listener(self) -> None:
        listener, self._http_listener = self._http_listener, None
        if listener is not None:
            listener.close()

    def _close_health_server(self) -> None:
        server, self._health_server, self.started = self._health_server, None, False
        if server is not None:
            server.shutdown()
            server.server_close()

    @property
    def serving(self) -> bool:
        """Whether the HTTP server is up (`http_url` is then its address)."""
        return self._http is not None

    @property
    def http_url(self) -> str:
        """Base URL of the HTTP server once started."""
        assert self._http is not None
        sock = self._http.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def health(self) -> dict[str, Any]:
        """What `/health` answers: ok, or why not (a dead producer, a stall, the broker silent, a clock off), with the last retried error.

        A broker that has not answered for `stall_after_s` makes the service unhealthy, not stalled: the watchdog does not
        exit for it (docs/reliability.md, Liveness). Shorter, its silence shows as `retrying`.
        """
        live = self.bus.liveness
        reason = str(self.bus.failure) if self.bus.failure is not None else self.stalled
        if reason is None and not self.started:
            reason = "starting"
        if reason is None and live.silent_s() > self.stall_after_s:
            reason = live.broker_silence()
        clock = self.clock
        if reason is None and clock is not None:
            reason = clock.skewed(self.max_clock_skew_s)
        database = self.database.health_note() if self.database is not None else None
        answer = {
            "ok": reason is None,
            "service": self.name,
            "reason": reason,
            # an outage the watch knows is said as it is (where, for how long, its last error), before a handler's bare retried
            # error: the approval's sweep showed `ConnectionRefusedError(111, …)` where the others said the database (oncall22 F2)
            "retrying": database or live.last_error or live.broker_silence(),
            "release": RELEASE,  # which copies run which code, in a rolling upgrade (docs/operations.md, Upgrading)
            "commit": commit(),
        }
        if clock is not None:  # this clock's offset from the broker's (ahead: > 0); a stand-in producer reads none
            answer["clock_offset_s"] = round(clock.offset_s, 3)
        return answer

    @property
    def clock(self) -> BrokerClock | None:
        """This host's clock against the broker's, as the service's producer reads it (None for a stand-in producer)."""
        clock = getattr(self.bus.producer, "clock", None)
        return clock if isinstance(clock, BrokerClock) else None

    async def watch(self) -> str:
        """Return (only) when this service can no longer make progress, with the reason; its checks also time the broker's silence."""
        observe_broker_silence(self.name, self.bus.liveness.silent_s)
        if self.clock is not None:
            observe_clock_offset(self.name, self.clock)
        broker = BrokerWatch(self.name, self.bus.bootstrap)  # a broker outage: one line as it starts, one as it ends
        while True:
            if self.bus.failure is not None:
                return f"producer dead: {self.bus.failure!r}"
            reason = await self.bus.liveness.stalled(stall_after_s=self.stall_after_s, handler_limit_s=self.handler_limit_s)
            if reason is not None:
                self.stalled = reason
                return reason
            broker.seen(self.bus.liveness)
            if self.ready_dir is not None:  # `tidegate status` without a port to ask `/health` reads this (servicekit.health_file)
                with contextlib.suppress(OSError):
                    write_health(self.ready_dir, self.name, self.health())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.bus.failed.wait(), self.watch_interval_s)

    async def run_until_signalled(self) -> None:
        """Start, then run until SIGTERM or SIGINT (stop cleanly), or until stalled (exit `EXIT_STALLED`)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
        except (TopicAuthorizationFailedError, GroupAuthorizationFailedError) as exc:  # before KafkaError: restarting cannot fix it
            with contextlib.suppress(Exception):
                await self.stop()
            raise BusRightsMissing.of(self.bus, exc) from exc
        except (ConnectionError, OSError, KafkaError, SchemaNotReady) as exc:  # what it needs is not there (yet): a line, by `run_service`
            with contextlib.suppress(Exception):
                await self.stop()
            raise NotStarted(f"{type(exc).__name__}: {exc}") from exc
        except (BehindTheBus, HistoryNotReadable):
            with contextlib.suppress(Exception):
                await self.stop()
            raise
        tune_gc()
        signalled = asyncio.create_task(stop.wait())
        watchdog = asyncio.create_task(self.watch())
        await asyncio.wait({signalled, watchdog}, return_when=asyncio.FIRST_COMPLETED)
        if signalled.done():
            watchdog.cancel()
            log.info("%s: signal received, stopping", self.name)
            await self.stop()
            return
        signalled.cancel()
        reason = watchdog.result()
        log.critical("%s: not making progress (%s); exiting %d for the supervisor to restart it", self.name, reason, EXIT_STALLED)
        try:  # handlers still in flight are cancelled, so their records are not committed
            await asyncio.wait_for(self.stop(), timeout=30)
        except Exception:  # exiting anyway: the records are read again after the restart
            log.exception("%s: unclean stop", self.name)
        raise SystemExit(EXIT_STALLED)


@contextlib.contextmanager
def _naming_the_port(host: str, port: int, setting: str) -> Iterator[None]:
    """Raise an address that cannot be listened on again, naming it and the setting that gives it (`[Errno 98]` alone does not).

    A host name that does not exist is a setting to fix (`SettingNotUsable`, named as the `_HOST` beside `setting`);
    anything else may pass (a port another process frees), so it stays an `OSError`, which is restarted.
    """
    try:
        yield
    except socket.gaierror as exc:
        if exc.errno != socket.EAI_NONAME:
            raise
        host_setting = setting.removesuffix("_PORT") + "_HOST"
        raise SettingNotUsable(f"{host_setting}: cannot listen on {host!r}: no such host ({exc.strerror})") from exc
    except OSError as exc:
        hint = "; is another copy still running? `tidegate status` shows those of `tidegate up`" if exc.errno == errno.EADDRINUSE else ""
        raise OSError(exc.errno, f"cannot listen on {host}:{port} (set by {setting}): {exc.strerror or exc}{hint}") from exc


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on `host`:`port` (IPv4 or IPv6, as `host` resolves), as uvicorn would bind it."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    return socket.create_server((host, port), family=family, backlog=2048)


class BusRightsMissing(RuntimeError):
    """The service's Kafka login may not use a topic or group it needs: ACLs not granted, or a topic prefix no one granted.

    `run_service` prints it as a `not started` line and exits `EX_CONFIG`: a restart would be refused again (a mistyped
    `TIDEGATE_TOPIC_PREFIX` crash-looped under `tidegate up`, each time with Kafka's bare error).
    """

    @classmethod
    def of(cls, bus: Bus, exc: KafkaError) -> BusRightsMissing:
        login = bus.client_options().get("sasl_plain_username") or "(no login)"
        what = "topic" if isinstance(exc, TopicAuthorizationFailedError) else "consumer group"
        named = str(exc).rsplit(": ", 1)[-1] if ": " in str(exc) else ""
        return cls(
            f"its Kafka login `{login}` may not use {what} {named or '(not named by the broker)'} ({type(exc).__name__}). "
            f"Its topics are named `{bus.prefix}<topic>` (TIDEGATE_TOPIC_PREFIX={bus.prefix!r}): if that is mistyped, fix it; "
            "else `tidegate topics ensure` (with this prefix) makes the topics and grants each service its rights"
        )


class NotStarted(RuntimeError):
    """A service could not start because the database (or its schema's migrations), the broker or its port is not there."""


def run_service(name: str, build: Callable[[KitSettings], ServiceProcess]) -> None:
    """Run the service `build` assembles from the environment's settings until SIGTERM: every service's `python -m`.

    A setting that is not valid (the kit's or the service's own) stops it before anything starts, with one line per
    variable on stderr and exit code `EX_CONFIG`, which `tidegate up` does not restart: only a person can fix it.
    """
    try:
        kit = KitSettings()
    except (ValidationError, SettingsError) as exc:
        _not_started(name, exc)
    configure_logging(kit.log_level, kit.log_format)
    install_tracing(name, otlp_endpoint=kit.otlp_endpoint)

    async def run() -> None:
        try:
            process = build(kit)  # built inside the loop that runs it: the pool is bound to that loop
        except (ValidationError, SettingsError) as exc:
            _not_started(name, exc)
        await process.run_until_signalled()

    try:
        asyncio.run(run())
    except NotStarted as exc:  # the database, the broker or a port not there at start: one line, not a trace
        # Exit 1, which a supervisor restarts (with backoff): what is missing may come back; the line says what it was.
        print(f"{name}: not started: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except SettingNotUsable as exc:
        _not_started(name, exc)
    except (BehindTheBus, HistoryNotReadable, BusRightsMissing) as exc:  # restarting cannot fix these: a person (`db catch-up` …) can
        print(f"{name}: not started: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EX_CONFIG) from None
    except asyncpg.ClientConfigurationError as exc:  # a DSN asyncpg cannot use, named as the CLI names it (commands/_common.py)
        _not_started(name, SettingNotUsable(f"TIDEGATE_DATABASE_URL: {exc}"))
    except CatalogError as exc:  # a tools folder that is not there, holds no tool, or a tool file that is not valid
        _not_started(name, SettingNotUsable(f"TIDEGATE_TOOLS_DIR: {exc}"))


def _not_started(name: str, exc: ValidationError | SettingsError | SettingNotUsable) -> NoReturn:
    """Exit `EX_CONFIG` with what is wrong with the settings; any other validation error is a bug, raised as it is."""
    problems = [str(exc)] if isinstance(exc, SettingNotUsable) else settings_problems(exc)
    if problems is None:
        raise exc
    print(
        f"{name}: not started: {len(problems)} setting(s) not valid", *(f"  {p}" for p in problems), sep="\n", file=sys.stderr, flush=True
    )
    raise SystemExit(EX_CONFIG)
