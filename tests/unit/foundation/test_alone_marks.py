"""`make test` runs the tests on the real broker on two pytest-xdist workers at once; what changes the whole broker runs alone.

A produce quota is the broker's, per principal, whatever the prefix, and every test's `topics` fixture sets the outside
principals', `ops`'s and `approval`'s back to their defaults (`ensure_topics`); `stale_rights` reads (and revokes) the
rights of every prefix, including one whose topics another test is creating that moment. A test doing either beside
another test makes one of them fail now and then, so it must carry `pytest.mark.alone`, which `make test` runs after the
parallel run, one by one. Read as the CI owner would: every such call in a live test file is under that mark.
"""

from __future__ import annotations

import ast
from pathlib import Path

from servicekit import REPO_ROOT

LIVE = ("tests/integration", "tests/security", "tests/e2e")
# Calls that change (or read and revoke) what every prefix and principal on the broker shares.
BROKER_WIDE_CALLS = {"produce_quotas", "stale_rights"}
BROKER_WIDE_KEYWORDS = {"ops_produce_bytes_per_s", "approval_produce_bytes_per_s", "services_produce_bytes_per_s", "produce_bytes_per_s"}
BROKER_WIDE_SETTINGS = ("PRODUCE_BYTES_PER_S",)  # a quota setting handed to `tidegate topics ensure` in its environment


def _is_alone(node: ast.expr) -> bool:
    """`pytest.mark.alone`, a list holding it, or a call of it."""
    if isinstance(node, ast.List | ast.Tuple):
        return any(_is_alone(e) for e in node.elts)
    if isinstance(node, ast.Call):
        node = node.func
    return isinstance(node, ast.Attribute) and node.attr == "alone"


def _changes_the_broker(node: ast.AST) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            name = sub.func.attr if isinstance(sub.func, ast.Attribute) else getattr(sub.func, "id", "")
            if name in BROKER_WIDE_CALLS or any(k.arg in BROKER_WIDE_KEYWORDS for k in sub.keywords):
                return True
        text = sub.value if isinstance(sub, ast.Constant) and isinstance(sub.value, str) else ""
        if text.startswith("TIDEGATE_KAFKA_") and text.endswith(BROKER_WIDE_SETTINGS):
            return True
    return False


def unmarked_broker_wide_tests(root: Path) -> list[str]:
    """`path::test` of each test that changes the whole broker (itself or through a function of its module) and is not `alone`."""
    found = []
    for folder in LIVE:
        for path in sorted((root / folder).rglob("test_*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
            module_alone = any(
                isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets) and _is_alone(n.value)
                for n in tree.body
            )

            def reaches(fn: ast.AST, seen: set[str], functions: dict[str, ast.AST] = functions) -> bool:
                if _changes_the_broker(fn):
                    return True
                called = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and n.id in functions and n.id not in seen}
                return any(reaches(functions[name], seen | called) for name in called)

            for name, fn in functions.items():
                if not name.startswith("test_") or module_alone or any(_is_alone(d) for d in fn.decorator_list):
                    continue
                if reaches(fn, {name}):
                    found.append(f"{path.relative_to(root)}::{name}")
    return found


def test_every_live_test_that_changes_the_whole_broker_runs_alone() -> None:
    assert unmarked_broker_wide_tests(REPO_ROOT) == []


def test_the_check_finds_a_quota_test_left_unmarked(tmp_path: Path) -> None:
    """A new quota test written without the mark, through a helper of its module, is named."""
    folder = tmp_path / "tests" / "security"
    folder.mkdir(parents=True)
    (folder / "test_new_quota.py").write_text(
        "import pytest\n"
        "async def lift(admin):\n    await produce_quotas(admin, {'agent': None})\n"
        "async def test_unmarked(admin):\n    await lift(admin)\n"
        "@pytest.mark.alone\nasync def test_marked(admin):\n    await lift(admin)\n"
        "def test_env():\n    run({'TIDEGATE_KAFKA_OPS_PRODUCE_BYTES_PER_S': '1'})\n"
        "def test_other():\n    assert True\n"
    )
    assert unmarked_broker_wide_tests(tmp_path) == [
        "tests/security/test_new_quota.py::test_unmarked",
        "tests/security/test_new_quota.py::test_env",
    ]
