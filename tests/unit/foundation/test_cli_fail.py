"""The CLI's one-line errors: one line however long, and a quoted value shown as it is, never read as markup."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from tidegate.commands._common import fail

app = typer.Typer()


@app.command()
def broken(value: str) -> None:
    fail(f"cannot read {value!r}: " + "the reason is long enough to pass any terminal's width " * 4)


def test_an_error_is_one_line_in_a_log_and_shows_brackets_as_they_are() -> None:
    out = CliRunner().invoke(app, ["[/] [bold]x"])
    assert out.exit_code == 1
    lines = out.output.strip().splitlines()
    assert len(lines) == 1, lines  # rich wrapped it at 80 columns when the output was not a terminal
    assert "cannot read '[/] [bold]x'" in lines[0]  # markup in a value raised MarkupError, or was swallowed
