"""`tidegate credentials`: the platform engineer whose policy rotates every credential every 90 days reads each one's age.

Rotation probe F5: nothing said how old a key or a password was, so "rotate every 90 days" could not be checked or
monitored. The command lists every credential this machine holds, as old as the file that holds it, with the command
that rotates it, and exits 1 while one is older than the policy's period (a cron job's or a monitor's signal).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from servicekit import KitSettings
from servicekit.dbroles import credentials_file
from tidegate.cli import app
from tidegate.commands import credentials as credentials_module

runner = CliRunner()
DAY_S = 86_400


@pytest.fixture(autouse=True)
def _no_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test reaches no PostgreSQL: the approval service's tokens are read there (tests/unit/ops/test_credentials_in_database.py)."""
    monkeypatch.setattr(credentials_module, "in_database", lambda kit: credentials_module.InDatabase([]))


@pytest.fixture
def kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KitSettings:
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("TIDEGATE_INFRA_DIR", str(tmp_path / "infra"))
    monkeypatch.setenv("TIDEGATE_CLIENT_STATE_DIR", str(tmp_path / "client"))
    kit = KitSettings()
    made = runner.invoke(app, ["keys", "init", "--all"])
    assert made.exit_code == 0, made.output
    kit.kafka_credentials_dir.mkdir(parents=True)
    for principal in ("policy", "agent"):
        (kit.kafka_credentials_dir / f"{principal}.properties").write_text("sasl.mechanism=SCRAM-SHA-512\n")
    login = credentials_file(kit.db_credentials_dir, "policy")
    login.parent.mkdir(parents=True)
    login.write_text(json.dumps({"user": "tidegate_policy", "password": "x"}))
    kit.database_passfile.parent.mkdir(parents=True)
    kit.database_passfile.write_text("127.0.0.1:55432:*:tidegate:x\n")  # as `infra up` writes them
    (kit.infra_dir / "kafka" / "controller.secret").write_text("x\n")
    (tmp_path / "client").mkdir()
    (tmp_path / "client" / "mcp-gateway.token").write_text("x\n")  # as `mcp serve --http` makes it on its first run
    return kit


def _aged(path: Path, days: float) -> None:
    then = time.time() - days * DAY_S
    os.utime(path, (then, then))


def _lines(output: str) -> dict[str, str]:
    """Each credential line by its kind and name, e.g. `kafka login agent`."""
    shown = {}
    for line in output.splitlines():
        words = line.split()
        if words and words[0] in {"ok", "DUE"}:
            kind = " ".join(words[1:3])
            shown[f"{kind} {words[3]}"] = line
    return shown


def test_every_credential_is_listed_with_its_age_and_the_command_that_rotates_it(kit: KitSettings) -> None:
    listed = runner.invoke(app, ["credentials"])
    assert listed.exit_code == 0, listed.output
    shown = _lines(listed.output)
    for service in ("planner", "policy", "approval", "executor", "audit"):
        assert f"rotate: tidegate keys rotate {service}" in shown[f"signing key {service}"]
    assert "rotate: tidegate infra rotate-login agent" in shown["kafka login agent"]
    assert "rotate: tidegate db rotate policy" in shown["postgres login policy"]
    assert "rotate: tidegate connectors rotate-key" in shown["sealing key connector-credentials"]
    # the operator's own password (it can alter every schema) and the broker's controller login: generated, so listed too
    assert "rotate: tidegate db rotate --operator" in shown["postgres login operator"]
    assert "rotate: delete it, then `tidegate infra down && tidegate infra up`" in shown["kafka login controller"]
    assert "rotate: tidegate mcp rotate-token" in shown["http token mcp-gateway"]
    assert listed.output.splitlines()[-1] == f"0 of {len(shown)} older than 90 days"


def test_one_older_than_the_period_is_due_exits_1_and_a_rotation_makes_it_new(kit: KitSettings) -> None:
    _aged(kit.keys_dir / "planner" / "planner.key", 120)
    _aged(kit.kafka_credentials_dir / "agent.properties", 91)
    _aged(kit.kafka_credentials_dir / "policy.properties", 89)

    listed = runner.invoke(app, ["credentials", "--max-age-days", "90"])

    assert listed.exit_code == 1, listed.output
    shown = _lines(listed.output)
    assert shown["signing key planner"].startswith("DUE")
    assert "120.0 days" in shown["signing key planner"]
    assert shown["kafka login agent"].startswith("DUE")
    assert shown["kafka login policy"].startswith("ok")
    assert listed.output.splitlines()[-1] == f"2 of {len(shown)} older than 90 days: rotate each with the command beside it"

    rotated = runner.invoke(app, ["keys", "rotate", "planner"])
    assert rotated.exit_code == 0, rotated.output
    again = _lines(runner.invoke(app, ["credentials"]).output)
    assert again["signing key planner"].startswith("ok")
    assert again["kafka login agent"].startswith("DUE")


def test_a_rotation_left_half_done_is_said_and_json_is_one_object_each(kit: KitSettings) -> None:
    (kit.kafka_credentials_dir / "agent.properties.former").write_text("sasl.mechanism=SCRAM-SHA-512\n")
    shown = _lines(runner.invoke(app, ["credentials"]).output)
    assert "rotation under way: `tidegate infra rotate-login agent --finish`" in shown["kafka login agent"]

    _aged(kit.keys_dir / "audit" / "audit.key", 100)
    as_json = runner.invoke(app, ["credentials", "--json"])
    assert as_json.exit_code == 1
    rows = [json.loads(line) for line in as_json.output.splitlines()]
    [audit] = [r for r in rows if (r["kind"], r["name"]) == ("signing key", "audit")]
    assert audit["due"] is True
    assert audit["age_days"] == pytest.approx(100, abs=0.1)
    assert audit["rotate"] == "tidegate keys rotate audit"
    assert audit["path"] == str(kit.keys_dir / "audit" / "audit.key")
