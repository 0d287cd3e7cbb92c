"""Helpers shared by the CLI modules: settings, console, running coroutines, failing clearly."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from schemas import Envelope
from servicekit import Bus, KitSettings, make_broker, sign_as_operator

__all__ = ["console", "err_console", "fail", "publish_control", "run", "settings"]

T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)


def settings() -> KitSettings:
    """Settings from the environment (`TIDEGATE_*`)."""
    return KitSettings()


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a clear error and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion; connection errors become one readable line."""
    try:
        return asyncio.run(coro)
    except ConnectionError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc} (is `tidegate infra up` running?)")


async def publish_control(kit: KitSettings, event: Envelope) -> None:
    """Publish one record on the compacted `control` topic (acknowledged), signed by the CLI's operator key."""
    broker = make_broker(kit.kafka_bootstrap, "cli")
    await broker.start()
    try:
        await Bus(broker, "cli", kit.kafka_bootstrap, kit.topic_prefix).publish("control", sign_as_operator(kit, event))
    finally:
        await broker.stop()
