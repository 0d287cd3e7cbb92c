"""The `tidegate` console script: the CLI (`tidegate.cli`), or, in a client-only install, what to install for it.

`pip install '<checkout>[langgraph]'` (any adapter's extra, or none) installs the client and the adapters alone; the CLI,
the services and the MCP gateway need the `services` extra. Run there, a command that reaches a module of that extra
says which distributions are missing and the line that installs them (exit 2), not a traceback. This module imports
nothing beyond the standard library before it hands over to the CLI.
"""

from __future__ import annotations

import json
import re
import sys

__all__ = ["main", "missing_services_dependencies"]

DISTRIBUTION = "tidegate"
EXTRA = "services"


def missing_services_dependencies() -> list[str]:
    """The distributions the `services` extra requires that are not installed, by name (none when it is not installed)."""
    from importlib import metadata  # ~70 ms of CPU: only when a module is missing, not on every command

    try:
        requires = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:  # run from a checkout on PYTHONPATH: nothing to compare with
        return []
    missing = []
    for requirement in requires:
        name, _, marker = requirement.partition(";")
        if not re.search(rf"""extra\s*==\s*['"]{EXTRA}['"]""", marker):
            continue
        found = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", name.strip())
        if found is None:
            continue
        try:
            metadata.version(found.group(0))
        except metadata.PackageNotFoundError:
            missing.append(found.group(0))
    return missing


def _installed_from() -> str:
    """The folder pip installed this package from (PEP 610's direct_url.json), else a placeholder to fill in."""
    from importlib import metadata

    try:
        direct = metadata.distribution(DISTRIBUTION).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        direct = None
    url = json.loads(direct).get("url", "") if direct else ""
    return url.removeprefix("file://") if url.startswith("file://") else "/path/to/tidegate"


def main() -> None:
    """Run the CLI; without the services' dependencies, one message naming what to install and exit 2."""
    try:
        from tidegate.cli import main as cli_main

        cli_main()
    except ModuleNotFoundError as exc:
        missing = missing_services_dependencies()
        if not missing:
            raise
        checkout = _installed_from()
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        print(
            f"error: the tidegate command needs the services' dependencies (no module named {exc.name!r}; "
            f"not installed: {shown}). This install has the client and the adapters only. Install them with:\n"
            f"  pip install -c {checkout}/requirements.lock '{checkout}[{EXTRA}]'\n"
            f"(into a venv of its own, not the application's: they are pinned exactly; docs/integrations.md)",
            file=sys.stderr,
        )
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
