"""docker-compose.yml, the Dockerfile, infra.sh and the settings describe the same stack (parsed; no Docker needed)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement

from servicekit import REPO_ROOT, KitSettings, ToolCatalog
from servicekit.bus_rights import principal_names
from services.approval.settings import ApprovalSettings
from services.audit.settings import AuditSettings
from services.executor.settings import ExecutorSettings
from services.planner.settings import PlannerSettings
from services.policy.settings import PolicySettings

COMPOSE: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
SECURITY_KEYS = (
    "sasl.enabled.mechanisms",
    "sasl.mechanism.inter.broker.protocol",
    "sasl.mechanism.controller.protocol",
    "listener.name.controller.sasl.enabled.mechanisms",
    "authorizer.class.name",
    "allow.everyone.if.no.acl.found",
    "super.users",
    "inter.broker.listener.name",
    "controller.listener.names",
)


def normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def server_properties(script: Path) -> dict[str, str]:
    """The `key=value` lines of the server.properties a script writes (its heredoc), unexpanded."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^([a-z][a-z0-9.-]+)=(.*)$", script.read_text(), re.M)}


def test_the_image_copies_every_package_and_installs_the_lock() -> None:
    packages = [p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]]
    for package in packages:
        assert re.search(rf"^COPY {package} \./{package}$", DOCKERFILE, re.M), f"Dockerfile does not copy {package}/"
    assert "pip install -r requirements.lock" in DOCKERFILE
    assert "pip install -c requirements.lock '.[services]'" in DOCKERFILE  # the services' extra, held to the lock
    lock = (REPO_ROOT / "requirements.lock").read_text().splitlines()
    locked = {normalized(line.split("==")[0]): line.split("==")[1] for line in lock if "==" in line}
    for dep in PYPROJECT["project"]["dependencies"]:  # the client's ranges: the services run the lock's version inside them
        wanted = Requirement(dep)
        assert normalized(wanted.name) in locked, f"{dep} is not pinned in requirements.lock"
        assert wanted.specifier.contains(locked[normalized(wanted.name)]), f"requirements.lock's {wanted.name} is outside {dep}"
    for dep in PYPROJECT["project"]["optional-dependencies"]["services"]:
        name, _, version = dep.partition("==")
        assert locked.get(normalized(name)) == version, f"the services' {dep} is not requirements.lock's {name}=={locked.get(name)}"


def test_compose_sets_only_settings_that_exist() -> None:
    fields = {f"TIDEGATE_{name.upper()}" for name in KitSettings.model_fields}
    for settings in (ApprovalSettings, AuditSettings, ExecutorSettings, PlannerSettings, PolicySettings):
        prefix = settings.model_config.get("env_prefix", "")
        fields |= {f"{prefix}{name}".upper() for name in settings.model_fields}
    for name, service in COMPOSE["services"].items():
        for var in service.get("environment") or {}:
            if var.startswith("TIDEGATE_") and name != "kafka":
                assert var in fields, f"{name}: {var} is no setting"


def test_compose_publishes_ports_on_loopback_only() -> None:
    for name, service in COMPOSE["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_each_compose_service_logs_in_as_itself() -> None:
    for service in COMPOSE["services"].values():
        command = service.get("command") or []
        if command[:2] == ["service", "run"]:
            assert service["environment"]["TIDEGATE_KAFKA_PRINCIPAL"] == command[2]
            # Its own login only: the volume of its principal, where its settings look (test_compose.py checks the rest).
            assert f"kafka-{command[2]}:{service['environment']['TIDEGATE_KAFKA_CREDENTIALS_DIR']}:ro" in service["volumes"]


def test_compose_kafka_has_the_same_logins_and_authorizer_as_infra_sh() -> None:
    local = server_properties(REPO_ROOT / "infra" / "infra.sh")
    compose = server_properties(REPO_ROOT / "infra" / "compose-kafka.sh")
    assert {k: local[k] for k in SECURITY_KEYS} == {k: compose[k] for k in SECURITY_KEYS}
    assert local["super.users"] == "User:admin;User:controller"
    assert local["allow.everyone.if.no.acl.found"] == "false"
    for props in (local, compose):
        protocols = {p.split(":")[1] for p in props["listener.security.protocol.map"].split(",")}
        assert protocols == {"SASL_PLAINTEXT"}
    assert "bash /opt/tidegate/compose-kafka.sh" in " ".join(COMPOSE["services"]["kafka"]["entrypoint"])


def test_compose_makes_a_login_for_every_principal() -> None:
    script = (REPO_ROOT / "infra" / "compose-init.sh").read_text()
    found = re.search(r'^PRINCIPALS="([^"]*)"', script, re.M)
    assert found is not None
    tools = [t.name for t in ToolCatalog.load(KitSettings().tools_dir).values() if t.kind == "topic"]
    assert found.group(1).split() == principal_names(tools)
