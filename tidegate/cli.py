"""Entry point of the `tidegate` command; each group of subcommands lives in `tidegate/commands/`."""

from __future__ import annotations

import importlib

import typer

from servicekit.release import RELEASE, describe

__all__ = ["app", "main"]

app = typer.Typer(
    name="tidegate",
    help="Tidegate: governed execution for AI agents on Kafka. Agents propose; policy decides; humans approve; "
    "the executor acts once; the audit log proves it.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

# (module, group name or None for top-level commands); grouped by who uses them.
_COMMANDS: list[tuple[str, str | None]] = [
    ("infra", "infra"),
    ("db", "db"),
    ("topics", "topics"),
    ("services", None),
    ("status", None),
    ("tasks", None),
    ("lag", None),
    ("restart", None),
    ("clients", None),
    ("approvals", "approvals"),
    ("policy", "policy"),
    ("killswitch", "killswitch"),
    ("budget", "budget"),
    ("tenant", "tenant"),
    ("audit", "audit"),
    ("dead_letters", "dead-letters"),
    ("connectors", "connectors"),
    ("keys", "keys"),
    ("credentials", None),
    ("client_keys", "clients"),
    ("ops", None),
    ("undo", None),
    ("autonomy", "autonomy"),
    ("mcp", "mcp"),
]

for module_name, group in _COMMANDS:
    try:
        module = importlib.import_module(f"tidegate.commands.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"tidegate.commands.{module_name}":
            raise
        continue
    sub: typer.Typer = module.app
    if not (sub.registered_commands or sub.registered_groups):
        continue
    if group is None:
        app.registered_commands += sub.registered_commands
        app.registered_groups += sub.registered_groups
    else:
        app.add_typer(sub, name=group, help=sub.info.help)


def _print_version(asked: bool) -> None:
    if asked:
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
    from servicekit.catalog import CatalogError

    try:
        app()
    except CatalogError as exc:
        typer.echo(
            f"error: the tool catalog: {exc} (TIDEGATE_TOOLS_DIR, TIDEGATE_EXTRA_TOOLS_DIRS: a JSON list of folders that exist; "
            "docs/tools.md)",
            err=True,
        )
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
