"""A developer runs a stand-in by hand (`python -m standins NAME`) and points a connector at what it prints.

Connectors probe F11: only the Zendesk stand-in could be run alone (`python -m standins.github` printed nothing and
exited 0), and it said neither where it listened nor which credential it took. Each test starts one as a subprocess,
reads only what it printed (URL, credential, the `tidegate connectors enable` line's settings, a sample call) and makes
that call through the connector's own code, as the executor would for a tenant so connected.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from connector_harness import call_context

from connectors import bigquery_tools, github_tools, salesforce_tools, stripe_tools, zendesk_tools
from servicekit import REPO_ROOT, ToolError


@dataclass
class Printed:
    url: str
    credential: str
    settings: dict[str, str]
    tool: str
    args: dict[str, Any]
    lines: list[str]


def _read(proc: subprocess.Popen[str]) -> Printed:
    assert proc.stdout is not None
    lines: list[str] = []
    while not lines or not lines[-1].startswith("state lives in memory"):
        line = proc.stdout.readline()
        assert line, f"the stand-in stopped before saying how to use it: {lines} {proc.stderr.read() if proc.stderr else ''}"
        lines.append(line.rstrip("\n"))
    url = lines[0].rsplit(" ", 1)[1]
    credential = next(line.removeprefix("credential: ") for line in lines if line.startswith("credential: "))
    enable = shlex.split(next(line for line in lines if "tidegate connectors enable" in line))
    settings = dict(enable[i + 1].split("=", 1) for i, word in enumerate(enable) if word == "--set")
    tool, args = next(line.removeprefix("sample: try ").split(" ", 1) for line in lines if line.startswith("sample: try "))
    return Printed(url, credential, settings, tool, json.loads(args), lines)


@pytest.fixture
def run_standin(tmp_path: Path) -> Iterator[Any]:
    started: list[subprocess.Popen[str]] = []

    def run(*argv: str) -> Printed:
        proc = subprocess.Popen(
            [sys.executable, "-m", *argv], cwd=tmp_path, env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        started.append(proc)
        return _read(proc)

    yield run
    for proc in started:
        proc.terminate()
        proc.wait(timeout=10)


CALLS = {
    "zendesk_get_ticket": zendesk_tools.get_ticket,
    "github_get_issue": github_tools.get_issue,
    "salesforce_get_record": salesforce_tools.get_record,
    "bigquery_query": bigquery_tools.run_query,
    "stripe_get_charge": stripe_tools.get_charge,
}


@pytest.mark.parametrize(
    "argv",
    [
        ("standins", "zendesk"),
        ("standins.zendesk",),
        ("standins", "github"),
        ("standins.github",),
        ("standins", "salesforce"),
        ("standins", "bigquery"),
        ("standins", "stripe"),
    ],
    ids=" ".join,  # "standins stripe": the connector tests' longer timeout for stripe-mock's first build applies
)
async def test_a_stand_in_run_by_hand_says_where_and_with_what_credential_and_its_sample_call_works(
    run_standin: Any, argv: tuple[str, ...]
) -> None:
    printed = run_standin(*argv)
    name = argv[-1].removeprefix("standins.")
    assert printed.lines[0] == f"{name} stand-in listening at {printed.url}"
    assert any(f"tidegate connectors set-credential {name} --tenant acme" in line for line in printed.lines)
    connection = {"base_url": "", **printed.settings}
    ctx = call_context(credential=printed.credential, **connection)
    answer = await CALLS[printed.tool](ctx, printed.args)
    assert answer  # the sample the stand-in printed is there, read with the credential it printed
    with pytest.raises(ToolError) as refused:
        await CALLS[printed.tool](call_context(credential="not-the-printed-one", **connection), printed.args)
    assert refused.value.type == "credential_rejected"


def test_every_stand_in_says_how_to_run_it() -> None:
    shown = subprocess.run([sys.executable, "-m", "standins", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    for name in ("zendesk", "github", "salesforce", "bigquery", "stripe"):
        assert re.search(rf"^\s+{name}\s", shown.stdout, re.MULTILINE), shown.stdout
    for module in ("github", "salesforce", "bigquery", "zendesk"):
        one = subprocess.run([sys.executable, "-m", f"standins.{module}", "--help"], cwd=REPO_ROOT, capture_output=True, text=True)
        assert one.returncode == 0, (module, one.stderr)
        assert "--port" in one.stdout, module
        assert "credential" in one.stdout, module


def test_a_port_in_use_is_one_line_saying_what_to_do(run_standin: Any) -> None:
    port = run_standin("standins", "github").url.rsplit(":", 1)[1]
    taken = subprocess.run([sys.executable, "-m", "standins", "github", "--port", port], cwd=REPO_ROOT, capture_output=True, text=True)
    assert taken.returncode == 1
    assert taken.stderr.strip().splitlines() == [
        f"error: the github stand-in cannot listen on 127.0.0.1:{port} (Address already in use); give another --port"
    ]


def test_the_printed_lines_stay_one_word_each_in_a_shell(run_standin: Any, tmp_path: Path) -> None:
    """A credential with a quote, a certificate folder with a space: each printed line is still a command a shell runs."""
    printed = run_standin("standins", "salesforce", "--token", "00D!it's", "--state-dir", str(tmp_path / "my certs"))
    assert printed.credential == "00D!it's"
    assert printed.settings["ca_bundle"] == str((tmp_path / "my certs" / "salesforce" / "standin.crt").resolve())
    pipe = next(line for line in printed.lines if "set-credential" in line)
    assert shlex.split(pipe)[:3] == ["printf", "%s", "00D!it's"]
