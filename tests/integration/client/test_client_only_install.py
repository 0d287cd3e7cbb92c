"""The documented client install into an application's own venv: the client and its adapter only, the app's pins kept.

`pip install '<checkout>[langgraph]'` (docs/integrations.md, "From your own application"). Needs the package registry (or
pip's cache), as `make install` does, and some minutes: here rather than with the unit tests, which stay offline.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[3]

# The services' dependencies an application never needs for the client: the `services` extra less the client's own
# (pyproject.toml). Before, the base dependencies were these, pinned exactly: the documented line brought ~750 MB into
# the app's venv and moved the app's own pins (httpx 0.27.2 to 0.28.1, pydantic 2.11 to 2.14).
PYPROJECT = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    found = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert found is not None, requirement
    return re.sub(r"[-_.]+", "-", found.group(0)).lower()


SERVER_ONLY = {_name(d) for d in PYPROJECT["project"]["optional-dependencies"]["services"]} - {
    _name(d) for d in PYPROJECT["project"]["dependencies"]
}
APP_PINS = ["httpx==0.27.2", "pydantic==2.11.*", "langgraph", "langchain"]  # an app's venv before it adds Tidegate


def _site_packages_bytes(venv: Path) -> int:
    return sum(f.stat().st_size for f in venv.glob("lib/python*/site-packages/**/*") if f.is_file() and not f.is_symlink())


def _freeze(venv: Path) -> dict[str, str]:
    done = subprocess.run([venv / "bin" / "python", "-m", "pip", "list", "--format=json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return {_name(d["name"]): d["version"] for d in json.loads(done.stdout)}


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_documented_install_into_an_apps_venv_brings_the_client_and_adapter_only_and_keeps_the_apps_pins(tmp_path: Path) -> None:
    """`pip install '<checkout>[langgraph]'` into an app's venv that pins its own httpx and pydantic, as docs/integrations.md says.

    Needs the package registry (or pip's cache), as `make install` does. Asserted: no distribution of SERVER_ONLY
    (litellm, asyncpg, fastapi, cedarpy, google-cloud-bigquery, matplotlib, stripe, typer...) is installed; every
    distribution the app had keeps its version; site-packages grows by less than 60 MB (a client-only install: ~34 MB,
    of it cryptography 16 MB); the client and the LangGraph adapter's middleware import from the installed copy; the
    `tidegate` command names what to install, exit 2, no traceback.
    """
    venv = tmp_path / "app-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    done = subprocess.run([*pip, *APP_PINS], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    before, size_before = _freeze(venv), _site_packages_bytes(venv)

    done = subprocess.run([*pip, f"{CHECKOUT}[langgraph]"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    after, grown = _freeze(venv), _site_packages_bytes(venv) - size_before

    assert not SERVER_ONLY & (after.keys() - before.keys()), f"the server came along: {sorted(SERVER_ONLY & after.keys())}"
    assert {n: after.get(n) for n in before} == before  # the app's pins (httpx 0.27.2, pydantic 2.11.*) and the rest kept
    assert grown < 60 * 2**20, f"site-packages grew by {grown / 2**20:.0f} MB: {sorted(after.keys() - before.keys())}"

    app = tmp_path / "app"
    app.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDEGATE_", "PYTHON"))}
    code = (
        "import tidegate.client as c; from tidegate.client import Tidegate\n"
        "from tidegate.integrations.langgraph import TidegateMiddleware\n"
        "print(c.__file__)"
    )
    done = subprocess.run([venv / "bin" / "python", "-c", code], cwd=app, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(str(venv))  # the installed copy, not the checkout

    done = subprocess.run([venv / "bin" / "tidegate", "status"], cwd=app, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert f"pip install -c {CHECKOUT}/requirements.lock '{CHECKOUT}[services]'" in done.stderr, done.stderr
