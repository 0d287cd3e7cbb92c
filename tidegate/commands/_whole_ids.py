"""A listing whose first column is an id another command takes: printed as a table when it fits, else as blocks.

A table in a pipe or a narrow terminal (80 columns) cuts its cells (`tok_5…`), and a cut id cannot be copied into
`token revoke` or `audit explain`. So, as `approvals list` does, a listing that does not fit prints each row as a
block: its id first, whole, on its own line, then the other columns on one indented line.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from tidegate.commands._common import console

__all__ = ["print_listing"]


def print_listing(headers: Sequence[str], rows: Sequence[Sequence[str]], *, title: str | None = None) -> None:
    """Print `rows` (markup, the id first) under `headers`: a table when it fits the console's width, else one block per row."""
    table = Table(*headers, title=title)
    for row in rows:
        table.add_row(*row)
    if console.measure(table, options=console.options.update_width(100_000)).maximum <= console.width:  # its natural width
        console.print(table)
        return
    if title:
        console.print(title, soft_wrap=True)
    for first, *rest in rows:
        console.print(f"[bold]{first}[/]", soft_wrap=True)
        console.print("  " + " · ".join(f"{name}: {value}" for name, value in zip(headers[1:], rest, strict=True) if value), soft_wrap=True)
