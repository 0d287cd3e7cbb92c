"""An operator's `tidegate --help` (and any one command) imports only what that command needs, and reads as before.

Every `tidegate …` used to import every command module, so the services' packages, `servicekit` and every event model of
`schemas` (~2 s of CPU) before it printed a line. The root now lists its commands from `tidegate/cli_index.json` and
imports a command's module when that command runs; these tests hold it to the same help, word for word.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from tidegate.cli import app
from tidegate.cli_lazy import INDEX, eager, index_of

ROOT = Path(__file__).resolve().parents[3]

# What `tidegate --help` imported before (~2 s of CPU between them): none of it is needed to list the commands. The
# console script's importlib.metadata (~70 ms) is for naming a missing dependency only.
HEAVY = (
    "services", "servicekit", "servicekit.authority", "schemas", "pydantic", "tidegate.commands", "httpx", "aiokafka", "asyncpg",
    "importlib.metadata",
)  # fmt: skip


def _modules_after(*argv: str) -> set[str]:
    """The modules a `tidegate` process (the console script's entry) has imported once it ran `argv`."""
    code = (
        "import sys\n"
        "from tidegate.entry import main\n"
        f"sys.argv = ['tidegate', *{list(argv)!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('\\n'.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    return set(done.stderr.split())


def _loaded(modules: set[str], prefix: str) -> list[str]:
    return sorted(m for m in modules if m == prefix or m.startswith(f"{prefix}."))


def test_help_imports_no_command_module_no_service_and_no_event_model() -> None:
    modules = _modules_after("--help")
    assert "tidegate.cli" in modules, "the probe did not run the CLI"
    assert {name: _loaded(modules, name) for name in HEAVY if _loaded(modules, name)} == {}


def test_one_command_imports_its_own_module_not_the_others() -> None:
    modules = _modules_after("tasks", "--help")
    assert "tidegate.commands.tasks" in modules
    others = {"tidegate.commands.audit", "tidegate.commands.approvals", "tidegate.commands.policy", "tidegate.commands.connectors"}
    assert others & modules == set()
    assert _loaded(modules, "services") == []


def _paths(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of an (eager) click tree, the root first."""
    found = [path]
    for name, sub in getattr(command, "commands", {}).items():
        found += _paths(sub, (*path, name))
    return found


WHOLE = eager(app)
PATHS = _paths(typer.main.get_group(WHOLE))


def test_the_walk_finds_every_command() -> None:
    assert len(PATHS) > 100, "the walk no longer finds the commands"


# One test per top-level word (the root's own help with the first), each under the per-test timeout on a loaded machine.
@pytest.mark.parametrize("word", sorted({p[0] for p in PATHS if p}))
def test_every_commands_help_is_the_one_of_the_cli_that_imports_every_module(word: str) -> None:
    runner = CliRunner()
    env = {"COLUMNS": "120", "TERM": "dumb"}
    differ = []
    for path in [p for p in PATHS if p[:1] == (word,) or (not p and word == min(q[0] for q in PATHS if q))]:
        lazy, before = runner.invoke(app, [*path, "--help"], env=env), runner.invoke(WHOLE, [*path, "--help"], env=env)
        if (lazy.exit_code, lazy.output) != (before.exit_code, before.output) or before.exit_code != 0:
            differ.append(f"tidegate {' '.join(path)} --help: exit {lazy.exit_code} vs {before.exit_code}\n{lazy.output}\n{before.output}")
    assert not differ, "\n".join(differ[:3])


def test_the_index_says_what_the_command_modules_say() -> None:
    assert json.loads(INDEX.read_text()) == index_of(app), "tidegate/cli_index.json is out of date: run `make cli-index`"


@pytest.mark.parametrize(("argv", "said"), [(["statuz"], "Did you mean 'status'"), (["approvals", "lst"], "No such command 'lst'")])
def test_a_misspelt_command_is_still_named_and_a_close_one_suggested(argv: list[str], said: str) -> None:
    result = CliRunner().invoke(app, argv, env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert said in result.output
