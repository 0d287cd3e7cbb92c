"""Helpers shared by the CLI modules: settings, console, running coroutines, failing clearly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Coroutine, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import asyncpg
import typer
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from schemas import Envelope, encode
from servicekit import OPS, Bus, KitSettings, Producer, deployment_authority, kafka_options, settings_problems, sign_as_operator
from servicekit.printable import OneLineFormatter, printable
from servicekit.signing import BadKeyName
from tidegate.ops.recorded import BadTime, parse_time

__all__ = [
    "BY_HELP",
    "TEXT_MAX",
    "console",
    "err_console",
    "fail",
    "logs_aside",
    "one_line",
    "publish_control",
    "publish_signed_control",
    "run",
    "settings",
    "shown",
    "signed_control",
    "signer_settings",
    "when",
]

T = TypeVar("T")
E = TypeVar("E", bound=Envelope)
# No `:name:` emoji codes: a value someone else wrote (a task id, a comment) is printed as it is.
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)


def settings() -> KitSettings:
    """Settings from the environment (`TIDEGATE_*`); one that is not valid is named, with why, and the command exits 2."""
    try:
        return KitSettings()
    except ValidationError as exc:
        problems = settings_problems(exc) or [str(exc)]
        fail("; ".join(problems), code=2)


BY_HELP = "The operator key that signs (default: TIDEGATE_OPERATOR); the record names its holder as its author."


def signer_settings(by: str | None) -> KitSettings:
    """Settings whose operator key is `by` (`--by`), when given: a control record names the key that signed it."""
    kit = settings()
    if by is None or by == kit.operator:
        return kit
    try:
        return KitSettings(operator=by)
    except ValueError:
        fail(f"--by names an operator key: lower case letters, digits, `-` and `_`, not {by!r}")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a clear error, one line however wide the terminal (a log's reader greps it), and exit non-zero.

    The message is text, never markup: a value quoted in it (a file name, a tenant's input) is shown as it is.
    """
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


SHOWN_MAX = 200  # characters of an id or a name; longer ones are cut with `…`
TEXT_MAX = 2000  # characters of free text (a reason's message, a comment)


def one_line(value: object, limit: int | None = SHOWN_MAX) -> str:
    r"""A value someone else wrote, as plain text on one line.

    Line breaks, controls, bidi and other format characters show as escapes (`\n`, `\u202e`), so it cannot add a line
    or reorder what follows; past `limit` characters it is cut with `…`.
    """
    text = str(value)
    cut = limit is not None and len(text) > limit
    return printable(text[:limit]) + ("…" if cut else "")


def shown(value: object, limit: int | None = SHOWN_MAX) -> str:
    """Markup that prints a value someone else wrote (an agent's task id, a tool name, a comment) as it is: `one_line`, markup escaped."""
    return escape(one_line(value, limit))


def when(text: str) -> datetime:
    """A time as every operator command reads it (`now`, a duration ago, ISO 8601), or one line saying which forms are."""
    try:
        return parse_time(text)
    except BadTime as exc:
        fail(str(exc))


def _kafka_hint(kit: KitSettings) -> str:
    """What to check when the broker was not reached: a login folder with no login in it before the broker itself.

    A client with no login is closed by a broker that requires one (`infra up`'s) as if the broker were down: a checkout
    pointed at another's state without its logins read "is `tidegate infra up` running?" with the broker up (upgrade probe F1).
    """
    folder = kit.kafka_credentials_dir
    if kit.kafka_password is None and not any(folder.glob("*.properties")):
        return (
            f"no Kafka login in {folder}: a broker that requires one closes the connection as if it were down; "
            "TIDEGATE_KAFKA_CREDENTIALS_DIR, default <TIDEGATE_INFRA_DIR>/kafka/credentials, names the folder `infra up` wrote them in"
        )
    mechanism = kit.kafka_sasl_mechanism or "the `sasl.mechanism` of the principal's file, SCRAM-SHA-512 when it names none"
    return (
        f"is `tidegate infra up` running? the login: TIDEGATE_KAFKA_PRINCIPAL / _PASSWORD / _CREDENTIALS_DIR ({folder}); "
        f"the mechanism tried: {mechanism} (TIDEGATE_KAFKA_SASL_MECHANISM; a rotation moves a login to the other)"
    )


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion; connection errors, and input read on the way, become one readable line."""
    try:
        return asyncio.run(coro)
    except (ConnectionError, PermissionError, BadTime) as exc:  # PermissionError: a key that may not sign (revoked client, denied operator)
        fail(str(exc))
    except BadKeyName as exc:  # a requester or tenant that is no file name (`../operators/x`) signs nothing
        fail(str(exc), code=2)
    except FileNotFoundError as exc:
        fail(f"{exc.strerror}: {exc.filename}")
    except OSError as exc:
        fail(f"{exc} (is `tidegate infra up` running?)")
    except KafkaError as exc:  # aiokafka's, not an OSError: a broker not reached, a login refused, a topic not allowed
        kit = settings()
        fail(f"Kafka at {kit.kafka_bootstrap}: {exc} ({_kafka_hint(kit)})")
    except asyncpg.ClientConfigurationError as exc:
        fail(f"TIDEGATE_DATABASE_URL: {exc}", code=2)
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:  # refused by the server, or a connection lost on the way
        fail(f"PostgreSQL: {type(exc).__name__}: {exc} (is it up, and is TIDEGATE_DATABASE_URL the operator's DSN?)")


def signed_control(kit: KitSettings, event: E, refused: str, so: str, *, sequence: int | None = None) -> E:
    """`event` signed by the CLI's operator key, checked as every service checks it; one they would refuse fails the command.

    `refused` and `so` say what that means (`not published` … `nothing changed`); `sequence`: as `sign_as_operator`.
    """
    signed = sign_as_operator(kit, event, sequence=sequence)
    refusal = deployment_authority(kit).check(encode(signed), signed)
    if refusal is not None:
        fail(
            f"{refused}: every service would refuse this record ({refusal.code}: {refusal.message}); {so}. "
            "The CLI signs as TIDEGATE_OPERATOR with its key in TIDEGATE_OPERATOR_PRIVATE_KEYS_DIR: `tidegate keys list` shows "
            "which operator keys the services trust (docs/security/signatures.md)"
        )
    return signed


async def publish_control(kit: KitSettings, event: Envelope) -> None:
    """Publish one record on the `control` topic (acknowledged), signed by the CLI's operator key, logged in as `ops`.

    The record is checked first as every service checks it (`Authority.check`): one they would refuse (a retired or
    unlisted operator key, a key that is not the operator's) is not published, and the command fails saying why, never
    "set" while nothing changes.
    """
    await publish_signed_control(kit, signed_control(kit, event, "not published", "nothing changed"))


async def publish_signed_control(kit: KitSettings, signed: Envelope) -> None:
    """Publish one record already signed and checked by `signed_control` on `control` (acknowledged), logged in as `ops`."""
    producer = Producer(kit.kafka_bootstrap, "cli", **kafka_options(kit, OPS))
    await producer.start()
    try:
        await Bus(producer, "cli", kit.kafka_bootstrap, kit.topic_prefix).publish("control", signed)
    finally:
        await producer.stop()


# uvicorn (an HTTP service run in-process) gives its loggers their own stderr handlers and stops them propagating.
_OWN_HANDLER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Divert(logging.Filter):
    """Sends a logger's records to `handler` instead of the logger's own handlers (which uvicorn may add later)."""

    def __init__(self, handler: logging.Handler) -> None:
        super().__init__()
        self.handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= self.handler.level:
            self.handler.handle(record)
        return False


@contextlib.contextmanager
def logs_aside(name: str, *, verbose: bool = False) -> Iterator[Path | None]:
    """Keep the logs of the services a tool runs in-process out of the report a person reads.

    They go to `<run_dir>/logs/<name>.log` (yielded), or to stderr with `--verbose` (yields None);
    stdout carries the report only.
    """
    path: Path | None = None
    if verbose:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    else:
        path = settings().run_dir / "logs" / f"{name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    handler.setFormatter(OneLineFormatter(_LOG_FORMAT))  # replayed events name what agents chose: one line a record
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    divert = _Divert(handler)
    for logger_name in _OWN_HANDLER_LOGGERS:
        logging.getLogger(logger_name).addFilter(divert)
    try:
        yield path
    finally:
        for logger_name in _OWN_HANDLER_LOGGERS:
            logging.getLogger(logger_name).removeFilter(divert)
        root.handlers = saved[1]
        root.setLevel(saved[0])
        handler.close()
