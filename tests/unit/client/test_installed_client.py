"""An integrator's own application, with Tidegate installed as a package (`pip install '<checkout>[langgraph]'`), not run
from the checkout: the client must not take the installed package's folder for a Tidegate checkout.

pip puts `tidegate`, `schemas` and `servicekit` side by side in site-packages, which is what the client looked for to tell
a checkout: it then read the deployment's public keys from `site-packages/.tidegate/keys`, kept its ledgers (and the MCP
gateway its bearer token) in `site-packages/.tidegate/client`, looked for a tool's Kafka login in `site-packages/.infra`,
and `tidegate mcp serve` looked for the catalog in `site-packages/catalog/tools` and, not finding it, named the services'
`TIDEGATE_TOOLS_DIR`, which the gateway does not read (the integrator3 probe, F1 and F2).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[3]


@pytest.fixture
def installed(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """The packages as pip installs them (copies in a site-packages of their own) and the integrator's app folder."""
    site = tmp_path / "site-packages"
    for package in ("tidegate", "schemas", "servicekit"):
        shutil.copytree(CHECKOUT / package, site / package, ignore=shutil.ignore_patterns("__pycache__"))
    app = tmp_path / "app"
    app.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    env["PYTHONPATH"] = str(site)
    return site, app, env


def _python(code: str, app: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=app, env=env, capture_output=True, text=True, timeout=120)


def test_an_installed_client_keeps_its_keys_state_and_logins_in_the_apps_folder_not_in_site_packages(
    installed: tuple[Path, Path, dict[str, str]],
) -> None:
    site, app, env = installed
    done = _python(
        "import importlib; import tidegate.client.settings as s; g = importlib.import_module('tidegate.client.governed')\n"
        "c = s.ClientSettings()\n"
        "print(s.__file__); print(c.service_keys_dir.resolve()); print(c.state_dir.resolve()); print(g.CREDENTIALS_DIR.resolve())",
        app,
        env,
    )
    assert done.returncode == 0, done.stderr
    module, keys, state, credentials = done.stdout.splitlines()
    assert module.startswith(str(site))  # the installed copy, not the checkout
    assert keys == str(app / ".tidegate" / "keys")
    assert state == str(app / ".tidegate" / "client")
    assert credentials == str(app / ".infra" / "kafka" / "credentials")


def test_the_checkouts_client_still_finds_the_checkouts_folders_from_any_working_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    env["PYTHONPATH"] = str(CHECKOUT)
    done = _python("from tidegate.client import ClientSettings as S; print(S().service_keys_dir)", tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(CHECKOUT / ".tidegate" / "keys")


def test_an_installed_gateway_without_a_catalog_names_the_gateways_own_settings(installed: tuple[Path, Path, dict[str, str]]) -> None:
    _, app, env = installed
    done = _python("import sys; sys.argv = ['tidegate', 'mcp', 'serve']; from tidegate.cli import main; main()", app, env)
    assert done.returncode == 2, done.stdout + done.stderr
    said = " ".join(done.stderr.split())
    assert "TIDEGATE_MCP_TOOLS_DIR" in said, said
    assert "TIDEGATE_MCP_EXTRA_TOOLS_DIRS" in said
    assert "TIDEGATE_TOOLS_DIR," not in said  # the services' setting: the gateway does not read it
    assert "installed" in said  # no checkout's catalog to fall back on: the folder must be given


def test_an_installed_gateway_looks_for_the_services_keys_in_the_apps_folder_not_in_site_packages(
    installed: tuple[Path, Path, dict[str, str]],
) -> None:
    site, app, env = installed
    env["TIDEGATE_MCP_TOOLS_DIR"] = str(CHECKOUT / "catalog" / "tools")
    done = _python("import sys; sys.argv = ['tidegate', 'mcp', 'serve']; from tidegate.cli import main; main()", app, env)
    said = " ".join(done.stderr.split())
    assert done.returncode != 0, said
    assert str(app / ".tidegate" / "keys") in said, said
    assert str(site) not in said
