"""docker-compose.yml cannot run here, so it is checked against the settings and the CLI instead."""

from __future__ import annotations

from typing import Any

import yaml

from servicekit import REPO_ROOT, KitSettings
from tidegate.commands.services import SERVICES


def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def test_every_service_runs_from_the_one_image_with_the_cli() -> None:
    services = compose()["services"]
    assert set(SERVICES) <= set(services)
    for name in SERVICES:
        command = services[name]["command"]
        command = command if isinstance(command, list) else command.split()
        assert command[-3:] == ["service", "run", name]
        assert services[name]["build"]["dockerfile"] == "Dockerfile"


def test_environment_names_are_real_settings() -> None:
    fields = {f"TIDEGATE_{name.upper()}" for name in KitSettings.model_fields}
    for name in SERVICES:
        env = compose()["services"][name]["environment"]
        unknown = {k for k in env if k.startswith("TIDEGATE_") and k not in fields and not k.startswith(f"TIDEGATE_{name.upper()}_")}
        assert not unknown, f"{name}: {unknown} are not settings"
        assert env["TIDEGATE_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["TIDEGATE_DATABASE_URL"] == "postgresql://postgres:5432/tidegate"  # no login: the service's own role is used


def test_only_the_migrator_holds_the_operators_database_login() -> None:
    """A compromised service (or a tool in the executor) must not find the role that owns the audit tables in its environment."""
    services = compose()["services"]
    holders = {name for name, spec in services.items() if "@" in str((spec.get("environment") or {}).get("TIDEGATE_DATABASE_URL", ""))}
    assert holders == {"migrate"}


def test_ports_match_the_local_infrastructure_defaults() -> None:
    services = compose()["services"]
    defaults = KitSettings.model_fields  # the defaults, not this shell's TIDEGATE_* overrides
    bootstrap, database_url = str(defaults["kafka_bootstrap"].default), str(defaults["database_url"].default)
    assert any(p.startswith(f"127.0.0.1:{bootstrap.rsplit(':', 1)[1]}:") for p in services["kafka"]["ports"])
    pg_port = database_url.rsplit(":", 1)[1].split("/")[0]
    assert any(p.startswith(f"127.0.0.1:{pg_port}:") for p in services["postgres"]["ports"])
    assert services["kafka"]["image"].startswith("apache/kafka:4.1")
    assert "process.roles=broker,controller" in (REPO_ROOT / "infra" / "compose-kafka.sh").read_text()
