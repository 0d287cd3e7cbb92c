"""The progress display of the long operator commands (replay, whatif, costs, audit verify): one bar per stage, on stderr.

It draws only on a terminal and never under `--json`: stdout stays the report alone, and a log or a pipe gets no bars.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tidegate.commands._common import err_console

__all__ = ["Report", "progress_display"]

Report = Callable[[str, int, int | None], None]
"""`report(stage, done, total)`: how far a stage is (`total` None: not known yet, the bar pulses)."""


@contextmanager
def progress_display(labels: Mapping[str, str] | None = None, *, quiet: bool = False) -> Iterator[Report]:
    """A `Report` that draws a bar per stage (named by `labels`, else by the stage) on stderr; silent when `quiet` or not a terminal."""
    shown = dict(labels or {})
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
        disable=quiet or not err_console.is_terminal,
    ) as bar:
        ids: dict[str, Any] = {}

        def report(stage: str, done: int, total: int | None) -> None:
            if stage not in ids:
                ids[stage] = bar.add_task(shown.get(stage, stage), total=total)
            bar.update(ids[stage], completed=done, total=total)

        yield report
