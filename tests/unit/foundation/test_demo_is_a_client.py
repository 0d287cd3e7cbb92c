"""The demo is a client like any other: the CLI's own commands do not publish or watch through the demo's module.

`tidegate propose`, `submit --wait` and `undo` published and watched with `tidegate.demo.run`'s `publish_events` and
`Watcher` (roomcheck): a client command loaded the demo (its seed tickets, its live table) to reach the bus, and a
change to the demo's run could change what `propose` prints. They live in `tidegate/bus_client.py`, which the demo uses too.
"""

from __future__ import annotations

from pathlib import Path

from test_import_rules import imports, sources

from servicekit import REPO_ROOT

DEMO_RUN = "tidegate.demo.run"


def demo_run_imports(path: Path) -> list[str]:
    """What a file takes from the demo's run other than `run_demo` (the `demo` command's own entry), as `line: names`."""
    found = []
    for line, module, names in imports(path):
        if module == DEMO_RUN and names != ["run_demo"]:
            found.append(f"{line}: {', '.join(names) or module}")
        elif module == "tidegate.demo" and "run" in names:
            found.append(f"{line}: the demo's run module")
    return found


def test_nothing_but_the_demo_command_takes_from_the_demos_run() -> None:
    outside = [p for p in sources("tidegate", "bench", "services", "servicekit") if not p.is_relative_to(REPO_ROOT / "tidegate" / "demo")]
    breaches = {str(p.relative_to(REPO_ROOT)): found for p in outside if (found := demo_run_imports(p))}
    assert breaches == {}


def test_the_check_sees_a_command_that_takes_the_demos_watcher(tmp_path: Path) -> None:
    path = tmp_path / "x.py"
    path.write_text("def f():\n    from tidegate.demo.run import Watcher, publish_events\n\n\nfrom tidegate.demo import run\n")
    assert sorted(demo_run_imports(path)) == ["2: Watcher, publish_events", "5: the demo's run module"]
    path.write_text("def demo():\n    from tidegate.demo.run import run_demo\n")
    assert demo_run_imports(path) == []
