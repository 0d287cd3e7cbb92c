"""The import rules of STYLE.md, checked over the source with `ast` (no import-linter: three rules fit in one file).

- no service imports another service;
- nothing outside a service imports its private modules: only `import services.<name>` or
  `from services.<name> import X` with X in the `__all__` of `services/<name>/__init__.py`;
- the kit (servicekit/) and the contract (schemas/) never import services/.

tests/ are left out: a service's own tests test its private modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from servicekit import REPO_ROOT

SERVICES = sorted(p.parent.name for p in (REPO_ROOT / "services").glob("*/__init__.py"))
NEVER_A_SERVICE = ("servicekit", "schemas")
OUTSIDE = ("tidegate", "bench", "systems", "examples", "evals", "deploy")

# Imports that break a rule today and cannot move to a public face without restructuring, with the
# reason: (importing file, imported module). This list only shrinks.
ALLOWED: frozenset[tuple[str, str]] = frozenset()


def imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, module, imported names) of every import in a file; names are empty for `import x.y`."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module, [alias.name for alias in node.names]


def public_face(service: str) -> set[str]:
    """The names in `__all__` of a service's `__init__.py`, read from its source."""
    tree = ast.parse((REPO_ROOT / "services" / service / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return {ast.literal_eval(element) for element in node.value.elts} if isinstance(node.value, ast.List) else set()
    return set()


def sources(*roots: str) -> Iterator[Path]:
    for root in roots:
        yield from sorted((REPO_ROOT / root).rglob("*.py"))


def service_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "services" and len(parts) > 1 else None


def breaches(path: Path, where: str) -> list[str]:
    """The rules a file breaks; `where` is its path in the repository, which says which rules apply."""
    top, found = Path(where).parts, []
    for line, module, names in imports(path):
        service = service_of(module)
        if (service is None and module != "services") or (where, module) in ALLOWED:
            continue
        if top[0] in NEVER_A_SERVICE:
            found.append(f"{where}:{line}: {top[0]}/ imports {module}")
        elif top[0] == "services":
            if service is not None and service != top[1]:
                found.append(f"{where}:{line}: service {top[1]} imports service {service} ({module})")
        elif service is None:
            found.append(f"{where}:{line}: imports the services package itself")
        elif module != f"services.{service}":
            found.append(f"{where}:{line}: imports the private module {module}")
        elif private := [n for n in names if n not in public_face(service)]:
            found.append(f"{where}:{line}: imports {', '.join(private)} from services.{service}, not in its __all__")
    return found


def violations() -> list[str]:
    return [b for path in sources("services", *NEVER_A_SERVICE, *OUTSIDE) for b in breaches(path, str(path.relative_to(REPO_ROOT)))]


def test_the_import_rules_hold() -> None:
    assert violations() == []


def defined_names(path: Path) -> set[str]:
    """The names a module defines or imports at its top level."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


@pytest.mark.parametrize("service", SERVICES)
def test_each_public_name_is_defined_where_the_face_says(service: str) -> None:
    """Every name in `__all__` is typed (imported under TYPE_CHECKING) and loads from a module that defines it.

    Read from the source, not imported: importing every service (litellm among them) in one test process
    changes what later tests see.
    """
    init = REPO_ROOT / "services" / service / "__init__.py"
    face = public_face(service)
    assert face, f"{init} declares no __all__"
    tree = ast.parse(init.read_text())
    typed = {
        (node.module, alias.name)
        for block in tree.body
        if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
        for node in block.body
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }
    assert {name for _, name in typed} == face
    for module, name in typed:
        where = REPO_ROOT / Path(*module.split("."))
        path = where / f"{name}.py" if module == f"services.{service}" else where.with_suffix(".py")
        assert path.exists(), f"{module}.{name}"
        assert module == f"services.{service}" or name in defined_names(path), f"{module}.{name}"
    home = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_HOME" for t in node.targets)
    )
    assert {f"services.{service}.{m}" for m in home.values()} <= {m for m, _ in typed}
    assert {(f"services.{service}.{home[n]}", n) for n in home} == {(m, n) for m, n in typed if m != f"services.{service}"}


@pytest.mark.parametrize(
    ("where", "source", "breach"),
    [
        ("services/policy/x.py", "from services.audit.records import observe\n", "service policy imports service audit"),
        ("services/policy/x.py", "import services.planner\n", "service policy imports service planner"),
        ("servicekit/x.py", "from services.policy import decide\n", "servicekit/ imports services.policy"),
        ("schemas/x.py", "import services\n", "schemas/ imports services"),
        ("tidegate/x.py", "from services.policy.engine import decide\n", "imports the private module services.policy.engine"),
        ("bench/x.py", "import services.audit.records\n", "imports the private module services.audit.records"),
        ("tidegate/x.py", "from services.audit import observe, _private\n", "imports _private from services.audit"),
    ],
)
def test_the_checker_reports_each_kind_of_breach(tmp_path: Path, where: str, source: str, breach: str) -> None:
    """The rules are not vacuous: a file that breaks one is reported, naming the rule."""
    path = tmp_path / "x.py"
    path.write_text(source)
    assert [b for b in breaches(path, where) if breach in b], breaches(path, where)


def test_the_checker_accepts_the_public_face_and_a_service_importing_itself(tmp_path: Path) -> None:
    path = tmp_path / "x.py"
    path.write_text("import services.policy\nfrom services.policy import decide, PackSource\n")
    assert breaches(path, "tidegate/x.py") == []
    path.write_text("from services.policy.engine import decide\n")
    assert breaches(path, "services/policy/app.py") == []
