"""Helpers shared by the CLI modules: settings, console, running coroutines, failing clearly."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from servicekit import KitSettings

__all__ = ["console", "err_console", "fail", "run", "settings"]

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
