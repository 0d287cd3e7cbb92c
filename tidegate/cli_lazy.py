"""The `tidegate` command's root group, which imports a command's module only when that command runs.

Every command module imports what it needs (services' packages, `servicekit`, `schemas`' models: ~2 s of CPU for all of
them), so importing them all to print `tidegate --help` or to run one command cost every `tidegate ...` that much. The root
lists its commands from `tidegate/cli_index.json` (name, module, help), written from the modules themselves by
`make cli-index`; a unit test fails when the index no longer says what the modules do, and when any command's
`--help` differs from the one of the CLI that imports every module.
"""

from __future__ import annotations

import copy
import importlib
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.models import DefaultPlaceholder

if TYPE_CHECKING:
    from typer import _click

__all__ = ["COMMAND_MODULES", "INDEX", "LazyGroup", "eager", "index_of", "write_index"]

# (module of tidegate.commands, group name or None for top-level commands); grouped by who uses them. The root lists
# top-level commands first, then groups, each in this order.
COMMAND_MODULES: list[tuple[str, str | None]] = [
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

INDEX = Path(__file__).with_name("cli_index.json")
# What the root's help and completion show of a command, besides its name: click's attributes and typer's panel.
_SHOWN = ("help", "short_help", "hidden", "deprecated", "rich_help_panel")


def _app_of(module_name: str) -> typer.Typer | None:
    """The Typer app of one command module; None when the module is not installed or adds no command."""
    try:
        module = importlib.import_module(f"tidegate.commands.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"tidegate.commands.{module_name}":
            raise
        return None
    sub: typer.Typer = module.app
    return sub if sub.registered_commands or sub.registered_groups else None


def _add(root: typer.Typer, module_name: str, group: str | None) -> None:
    """Add one module's commands to `root`: as top-level commands, or as the group `group`."""
    if (sub := _app_of(module_name)) is None:
        return
    if group is None:
        root.registered_commands += sub.registered_commands
        root.registered_groups += sub.registered_groups
    else:
        root.add_typer(sub, name=group, help=sub.info.help)


def _commands_of(module_name: str, group: str | None) -> dict[str, _click.Command]:
    """The root's commands that one module adds, built as the root builds them."""
    part = typer.Typer()
    _add(part, module_name, group)
    return dict(typer.main.get_group(part).commands)


class LazyGroup(TyperGroup):
    """The root group: its commands are stand-ins (name and help) until one is asked for, then the module's own."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._modules: dict[str, tuple[str, str | None]] = {}
        self._listing = False
        for entry in json.loads(INDEX.read_text()):
            if entry["name"] not in self.commands:
                self._modules[entry["name"]] = (entry["module"], entry["group"])
                self.commands[entry["name"]] = TyperCommand(entry["name"], **{k: entry[k] for k in _SHOWN})

    @contextmanager
    def _stand_ins(self) -> Iterator[None]:
        self._listing, was = True, self._listing
        try:
            yield
        finally:
            self._listing = was

    def get_command(self, ctx: _click.Context, cmd_name: str) -> _click.Command | None:
        """The command named `cmd_name`, its module imported now if it was not (while listing: its stand-in)."""
        if self._listing or cmd_name not in self._modules:
            return super().get_command(ctx, cmd_name)
        module_name, group = self._modules[cmd_name]
        loaded = _commands_of(module_name, group)
        for name, command in loaded.items():
            if self._modules.pop(name, None) is not None:
                self.commands[name] = command
        if cmd_name in self._modules:  # the index names a command its module no longer has (or a module not installed)
            del self._modules[cmd_name], self.commands[cmd_name]
        return self.commands.get(cmd_name)

    def format_help(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        """The root's help: each command's name and help from the index, no module imported."""
        with self._stand_ins():
            super().format_help(ctx, formatter)

    def shell_complete(self, ctx: _click.Context, incomplete: str) -> list[Any]:
        """Completion of a command's name: from the index, no module imported."""
        with self._stand_ins():
            return super().shell_complete(ctx, incomplete)


def eager(root: typer.Typer) -> typer.Typer:
    """`root` as it was before: a plain group with every command module imported (what the index is written from)."""
    whole = copy.copy(root)
    whole.info = copy.copy(root.info)
    whole.info.cls = TyperGroup
    whole.registered_commands = list(root.registered_commands)
    whole.registered_groups = list(root.registered_groups)
    for module_name, group in COMMAND_MODULES:
        _add(whole, module_name, group)
    return whole


def _plain(value: Any) -> Any:
    """A command's attribute as JSON holds it: a typer default left unset is its value (None)."""
    return value.value if isinstance(value, DefaultPlaceholder) else value


def index_of(root: typer.Typer) -> list[dict[str, Any]]:
    """What the index should hold for `root`: each command of its eager group, in order, with its module and help."""
    group = typer.main.get_group(eager(root))
    modules = {name: (module_name, g) for module_name, g in COMMAND_MODULES for name in _commands_of(module_name, g)}
    return [
        {"name": name, "module": modules[name][0], "group": modules[name][1]} | {k: _plain(getattr(command, k, None)) for k in _SHOWN}
        for name, command in group.commands.items()
        if name in modules
    ]


def write_index(root: typer.Typer, path: Path = INDEX) -> None:
    """Write the index of `root`'s commands (`make cli-index`)."""
    path.write_text(json.dumps(index_of(root), indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    from tidegate.cli import app

    write_index(app, Path(sys.argv[1]) if len(sys.argv) > 1 else INDEX)
