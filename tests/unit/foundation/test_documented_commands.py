"""Every command the README and docs/ tell a reader to type exists, with the options they give it.

A command renamed or an option dropped without its documentation leaves an operator at 2 a.m. with
"No such command": these tests read the `tidegate …` commands, the benchmarks' `python -m bench.… --option`
lines and the `make` targets out of the Markdown and hold each to the CLI, the benchmark's parser and
the Makefile as they are.
"""

from __future__ import annotations

import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer.main

from tidegate.cli import app

ROOT = Path(__file__).resolve().parents[3]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

# `tidegate …` at the start of a code line or of an inline code span, up to the end of the line or span.
_TIDEGATE = re.compile(r"(?:^[ \t]*(?:\$ )?|`)(?:\.venv/bin/)?(tidegate [a-z][^`\n#]*)", re.MULTILINE)
_BENCH = re.compile(r"python -m (bench\.[a-z_]+)((?: +--?[a-z][a-z-]*(?: +[^ `\n;|)',-][^ `\n;|)',]*)?)*)")
_MAKE = re.compile(r"(?:^[ \t]*|`)make ([a-z][a-z-]*)(?=[ `\n])", re.MULTILINE)
_OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
_WORD = re.compile(r"^[a-z][a-z-]*$")


def _documented(pattern: re.Pattern[str]) -> list[tuple[str, re.Match[str]]]:
    return [(str(doc.relative_to(ROOT)), m) for doc in DOCUMENTS for m in pattern.finditer(doc.read_text())]


def _is_group(command: Any) -> bool:
    # Typer builds its commands on its own copy of click: a group is what has subcommands.
    return hasattr(command, "commands")


def _options(command: Any) -> set[str]:
    return {name for p in command.params for name in [*p.opts, *p.secondary_opts] if name.startswith("--")} | {"--help"}


def _check_tidegate(text: str, root: Any) -> str | None:
    """Why `text` (`tidegate …`) is not a command of `root` with those options; None when it is."""
    text = text.replace("\\|", "|").split(" \\")[0]  # a `|` escaped in a Markdown table; a line continued with `\`
    words = text.split()[1:]
    command, path = root, ["tidegate"]
    for word in words:
        if not _is_group(command) or not _WORD.match(word):
            break
        sub = command.get_command(typer.Context(command), word)
        if sub is None:
            if "|" in word:  # `list|show|approve`: a choice written out, each must exist
                break
            return f"{' '.join(path)} has no command {word!r}"
        command, path = sub, [*path, word]
    else:
        word = ""
    if _is_group(command):
        choices = [w for w in word.split("|") if w] if "|" in word else []
        missing = [w for w in choices if w not in command.commands]
        return f"{' '.join(path)} has no command {missing}" if missing else None
    unknown = sorted(set(_OPTION.findall(text)) - _options(command))
    return f"{' '.join(path)} has no option {unknown}" if unknown else None


def test_every_documented_tidegate_command_exists_with_its_options() -> None:
    root = typer.main.get_command(app)
    found = _documented(_TIDEGATE)
    assert len(found) > 50, "the pattern no longer finds the documented commands"
    wrong = [f"{doc}: `{m.group(1).strip()}`: {why}" for doc, m in found if (why := _check_tidegate(m.group(1), root))]
    assert not wrong, "\n".join(wrong)


def test_the_check_refuses_a_command_or_an_option_the_cli_does_not_have() -> None:
    root = typer.main.get_command(app)
    assert _check_tidegate("tidegate approvals list", root) is None
    assert _check_tidegate("tidegate approvals list|show|approve", root) is None
    assert _check_tidegate("tidegate approvals frob", root) == "tidegate approvals has no command 'frob'"
    assert _check_tidegate("tidegate approvals list|frob", root) == "tidegate approvals has no command ['frob']"
    assert _check_tidegate("tidegate approvals list --bogus", root) == "tidegate approvals list has no option ['--bogus']"


@cache
def _bench_help(module: str) -> str:
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{module} --help failed: {done.stderr[-2000:]}"
    return done.stdout


def test_every_documented_benchmark_option_exists() -> None:
    bench_files = sorted((ROOT / "bench").glob("*.py"))
    found = _documented(_BENCH) + [(str(p.relative_to(ROOT)), m) for p in bench_files for m in _BENCH.finditer(p.read_text())]
    with_options = [(doc, m) for doc, m in found if _OPTION.search(m.group(2))]
    assert len(with_options) > 10, "the pattern no longer finds the documented benchmark commands"
    wrong = []
    for doc, m in with_options:
        options = _OPTION.findall(m.group(2))
        unknown = [o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", _bench_help(m.group(1)))]
        if unknown:
            wrong.append(f"{doc}: `{m.group(0).strip()}`: {m.group(1)} has no option {unknown}")
    assert not wrong, "\n".join(wrong)


def test_every_documented_make_target_exists() -> None:
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    found = _documented(_MAKE)
    assert {"demo", "test"} <= {m.group(1) for _, m in found}
    wrong = [f"{doc}: `make {m.group(1)}`" for doc, m in found if m.group(1) not in targets]
    assert not wrong, "targets the Makefile does not have:\n" + "\n".join(wrong)


@pytest.mark.parametrize("first_screen", ["make demo", "make test"])
def test_the_readme_gives_the_two_commands_first(first_screen: str) -> None:
    head = (ROOT / "README.md").read_text().split("\n---", 1)[0]
    assert re.search(rf"^{first_screen}\b", head, re.MULTILINE)
