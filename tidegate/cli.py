"""Entry point of the `tidegate` command; each group of subcommands lives in `tidegate/commands/`."""

from __future__ import annotations

import sys

import typer

from tidegate.cli_lazy import LazyGroup

__all__ = ["app", "main"]

app: typer.Typer = typer.Typer(
    name="tidegate",
    help="Tidegate: governed execution for AI agents on Kafka. Agents propose; policy decides; humans approve; "
    "the executor acts once; the audit log proves it.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    cls=LazyGroup,  # a command's module is imported when that command runs (tidegate/cli_lazy.py)
)


def _print_version(asked: bool) -> None:
    if asked:
        from servicekit.release import RELEASE, describe

        typer.echo(f"Tidegate {describe()}")
        typer.echo(f'upgrade notes up to step {RELEASE} of docs/operations.md ("Upgrading") are in it; a later step is a later release')
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        callback=_print_version,
        help="Print which release this is (the upgrade notes it includes) and exit.",
    ),
) -> None:
    """The options every command shares (`--version`); the help is the app's."""


def main() -> None:
    """Run the CLI; a tool catalog that cannot be read is one line naming the file or folder, and exit 2, not a traceback."""
    try:
        app()
    except Exception as exc:
        catalog = sys.modules.get("servicekit.catalog")  # imported if the command read the catalog; not imported here
        if catalog is None or not isinstance(exc, catalog.CatalogError):
            raise  # a service dependency missing, too: tidegate.entry names what to install
        typer.echo(
            f"error: the tool catalog: {exc} (TIDEGATE_TOOLS_DIR, TIDEGATE_EXTRA_TOOLS_DIRS: a JSON list of folders that exist; "
            "docs/tools.md)",
            err=True,
        )
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
