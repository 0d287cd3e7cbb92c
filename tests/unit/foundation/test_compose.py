"""docker-compose.yml cannot run here, so it is checked against the settings and the CLI instead."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors import Vault
from servicekit import REPO_ROOT, KitSettings, ToolCatalog, kafka_options, service_key
from servicekit.bus_auth import read_password
from servicekit.bus_rights import principal_names
from servicekit.dbroles import credentials_file
from services.audit.settings import AuditSettings
from services.executor.settings import ExecutorSettings
from services.policy.settings import PolicySettings
from tidegate.commands.services import SERVICES


@functools.cache
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


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


def test_ports_match_the_local_infrastructure_defaults() -> None:
    services = compose()["services"]
    defaults = KitSettings.model_fields  # the defaults, not this shell's TIDEGATE_* overrides
    bootstrap, database_url = str(defaults["kafka_bootstrap"].default), str(defaults["database_url"].default)
    assert any(p.startswith(f"127.0.0.1:{bootstrap.rsplit(':', 1)[1]}:") for p in services["kafka"]["ports"])
    pg_port = database_url.rsplit(":", 1)[1].split("/")[0]
    assert any(p.startswith(f"127.0.0.1:{pg_port}:") for p in services["postgres"]["ports"])
    assert services["kafka"]["image"].startswith("apache/kafka:4.1")
    assert "process.roles=broker,controller" in (REPO_ROOT / "infra" / "compose-kafka.sh").read_text()


# Each container holds only its own secrets: the volumes, who mounts them, and what the one-shot init writes there.

CONTAINER_ROOT = "/var/lib/tidegate"
SECRET_VOLUME_PREFIXES = ("keys", "kafka-", "db-", "postgres-")  # not kafka-data or pg-data: the stores themselves
SCRIPTS = REPO_ROOT / "infra"
CLI = f"{sys.executable} -m tidegate.cli"


def mounts(container: str) -> dict[str, tuple[str, bool]]:
    """Named volumes a container mounts: target path -> (volume, read-only)."""
    found = {}
    for entry in compose()["services"][container].get("volumes", []):
        source, target, *mode = entry.split(":")
        if not source.startswith((".", "/")):
            found[target] = (source, mode == ["ro"])
    return found


def is_secret(volume: str) -> bool:
    return volume.startswith(SECRET_VOLUME_PREFIXES)


def volume_at(container: str, path: str) -> str | None:
    """The volume that holds `path` in `container` (its deepest mount), or None when no volume does."""
    holders = [t for t in mounts(container) if path == t or path.startswith(t.rstrip("/") + "/")]
    return mounts(container)[max(holders, key=len)][0] if holders else None


def own_secrets(service: str) -> set[str]:
    """What a service needs: the public keys, and its own private key folder, Kafka login and PostgreSQL login."""
    extra = {"db-systems"} if service == "executor" else set()  # the login of its in-process tools
    return {"keys", f"keys-{service}", f"kafka-{service}", f"db-{service}"} | extra


def test_each_service_mounts_exactly_its_own_secrets_and_only_reads_them() -> None:
    for name in SERVICES:
        secret = {volume: ro for volume, ro in mounts(name).values() if is_secret(volume)}
        assert set(secret) == own_secrets(name), name
        assert all(secret.values()), f"{name} mounts a secret writable: {secret}"


def holders(volume: str) -> set[str]:
    """The containers that mount `volume`."""
    return {c for c in compose()["services"] if volume in {v for v, _ in mounts(c).values()}}


def test_no_other_container_mounts_a_services_private_key_or_login() -> None:
    init = {"secrets-init"}  # writes them all, then exits
    for name in SERVICES:
        assert holders(f"keys-{name}") == {name} | init
        assert holders(f"kafka-{name}") == {name, "kafka"} | init  # the broker registers every login
        assert holders(f"db-{name}") == {name, "migrate"} | init  # the migrator writes it
    assert holders("db-systems") == {"executor", "migrate"} | init
    assert holders("postgres-superuser") == {"postgres"} | init
    assert holders("postgres-operator") == {"postgres", "migrate"} | init
    assert holders("kafka-admin") == {"kafka", "topics"} | init
    assert holders("kafka-logins") == {"kafka"} | init


def test_no_password_is_written_in_the_compose_file() -> None:
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    assert "POSTGRES_PASSWORD:" not in text
    assert compose()["services"]["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"].startswith(f"{CONTAINER_ROOT}/postgres/superuser/")
    for name, spec in compose()["services"].items():
        for value in (spec.get("environment") or {}).values():
            assert "@" not in str(value), f"{name} has a login in its environment: {value}"


def run_init(root: Path, cli: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")} | {"TIDEGATE_CLI": cli, "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run(["bash", str(SCRIPTS / "compose-init.sh"), str(root)], env=env, check=True, capture_output=True)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The secrets `secrets-init` makes, under a temp dir standing for /var/lib/tidegate."""
    root = tmp_path_factory.mktemp("secrets")
    run_init(root, CLI)
    return root


def test_running_the_init_again_keeps_every_secret(made: Path) -> None:
    """A password made again would no longer match the broker's or the database's (`keys init` keeps keys: test_key_commands)."""
    before = {p: p.read_bytes() for p in made.rglob("*") if p.is_file()}
    run_init(made, "true")  # the keys step is tested on its own
    assert {p: p.read_bytes() for p in made.rglob("*") if p.is_file()} == before


def test_the_init_writes_every_secret_into_a_volume_of_the_container_that_reads_it(made: Path) -> None:
    for path in made.rglob("*"):
        if path.is_file():
            in_container = f"{CONTAINER_ROOT}/{path.relative_to(made).as_posix()}"
            volume = volume_at("secrets-init", in_container)
            assert volume is not None, f"{in_container} is written outside any volume: lost when the one-shot exits"
    for target in mounts("secrets-init"):
        assert (made / Path(target).relative_to(CONTAINER_ROOT)).is_dir(), f"nothing made for {target}"
    assert volume_at("secrets-init", f"{CONTAINER_ROOT}/keys/policy/policy.key") == "keys-policy"
    assert volume_at("secrets-init", f"{CONTAINER_ROOT}/keys/executor/connector-credentials.key") == "keys-executor"
    assert not [p for p in (made / "keys").glob("*.key")], "a private key at the top, where every service reads"


def test_the_init_makes_a_kafka_login_for_every_principal(made: Path) -> None:
    tools = [t.name for t in ToolCatalog.load(KitSettings().tools_dir).values() if t.kind == "topic"]
    assert sorted(p.name for p in (made / "kafka").glob("*/*.properties")) == sorted(f"{p}.properties" for p in principal_names(tools))
    for path in (made / "kafka").glob("*/*.properties"):
        assert path.parent.name == path.stem  # one folder (one volume) per principal


def test_the_init_makes_a_folder_for_every_database_login_that_migrate_writes(made: Path) -> None:
    from tidegate.database import SCHEMAS

    logins = {spec.user for spec in SCHEMAS}
    assert {p.name for p in (made / "db").iterdir()} == logins
    assert {volume for volume, _ in mounts("migrate").values() if volume.startswith("db-")} == {f"db-{login}" for login in logins}


def settings_of(container: str, root: Path, monkeypatch: pytest.MonkeyPatch) -> KitSettings:
    """The kit settings a container's compose environment gives, with /var/lib/tidegate standing at `root`."""
    for key in [k for k in os.environ if k.startswith("TIDEGATE_")]:
        monkeypatch.delenv(key)
    for key, value in compose()["services"][container]["environment"].items():
        monkeypatch.setenv(key, str(value).replace(CONTAINER_ROOT, str(root)))
    return KitSettings()


def in_container(path: Path, root: Path) -> str:
    return f"{CONTAINER_ROOT}/{path.relative_to(root).as_posix()}"


@pytest.mark.parametrize("service", SERVICES)
def test_every_secret_a_service_reads_is_in_its_own_mounted_volume_and_is_what_the_init_made(
    service: str, made: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = settings_of(service, made, monkeypatch)
    before = {p: p.stat().st_mtime_ns for p in made.rglob("*")}
    # Its signing key: made by the init, only read at start (the folder is read-only).
    key = service_key(kit, {"policy": PolicySettings().signing_key_name, "audit": AuditSettings().key_name}.get(service, service))
    assert volume_at(service, in_container(kit.keys_dir / key.name / f"{key.name}.key", made)) == f"keys-{service}"
    assert volume_at(service, in_container(kit.keys_dir / f"{key.name}.pub", made)) == "keys"
    # Its Kafka login: the file of its own principal, in its own volume.
    options = kafka_options(kit, service)
    assert options["sasl_plain_username"] == service
    properties = kit.kafka_credentials_dir / f"{service}.properties"
    assert options["sasl_plain_password"] == read_password(properties)
    assert volume_at(service, in_container(properties, made)) == f"kafka-{service}"
    # Its PostgreSQL login(s): where `migrate` writes them, in its own volume(s).
    logins = [service] + ([ExecutorSettings().tools_database_role or ""] if service == "executor" else [])
    for login in logins:
        assert volume_at(service, in_container(credentials_file(kit.db_credentials_dir, login), made)) == f"db-{login}"
        assert volume_at("migrate", in_container(credentials_file(kit.db_credentials_dir, login), made)) == f"db-{login}"
    if service == "executor":
        vault = Vault(kit.keys_dir)
        assert vault.ensure()  # the init made the pair: the executor's start only reads it
        assert volume_at(service, in_container(vault.private_path, made)) == "keys-executor"
        assert volume_at(service, in_container(vault.public_path, made)) == "keys"
    assert {p: p.stat().st_mtime_ns for p in made.rglob("*")} == before  # nothing written into the read-only mounts


def test_the_broker_registers_the_logins_the_services_read(made: Path, tmp_path: Path) -> None:
    dist = tmp_path / "kafka"
    (dist / "bin").mkdir(parents=True)
    calls = tmp_path / "calls"
    for tool in ("kafka-storage.sh", "kafka-server-start.sh"):
        (dist / "bin" / tool).write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" {tool} "$@" >>{calls}\n')
        (dist / "bin" / tool).chmod(0o755)
    env = os.environ | {
        "TIDEGATE_KAFKA_CREDENTIALS_DIR": str(made / "kafka"),
        "KAFKA_DIST": str(dist),
        "KAFKA_DATA_DIR": str(tmp_path / "data"),
        "KAFKA_CONF_FILE": str(tmp_path / "server.properties"),
        "CLUSTER_ID": "H5xCEzYRS9qpBucOV4XaGg",
    }
    subprocess.run(["bash", str(SCRIPTS / "compose-kafka.sh")], env=env, check=True, capture_output=True)
    args = calls.read_text().splitlines()
    registered = dict(re.findall(r"SCRAM-SHA-512=\[name=([^,]+),password=([^\]]+)\]", "\n".join(args)))
    for path in (made / "kafka").glob("*/*.properties"):
        assert registered.pop(path.stem) == read_password(path)
    assert not registered
    conf = (tmp_path / "server.properties").read_text()
    assert f'username="admin" password="{read_password(made / "kafka" / "admin" / "admin.properties")}"' in conf
    assert (made / "kafka" / "controller.secret").read_text().strip() in conf
    assert args[-2:] == ["kafka-server-start.sh", str(tmp_path / "server.properties")]


def test_postgres_and_the_migrator_get_the_same_generated_operator_password(made: Path, tmp_path: Path) -> None:
    password = (made / "postgres" / "operator" / "password").read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{48}", password)
    assert password != (made / "postgres" / "superuser" / "password").read_text().strip()
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "psql").write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" >{tmp_path / "psql.args"}\ncat >{tmp_path / "psql.stdin"}\n')
    (stub / "psql").chmod(0o755)
    env = os.environ | {"OPERATOR_PASSWORD_FILE": str(made / "postgres" / "operator" / "password"), "PATH": f"{stub}:{os.environ['PATH']}"}
    sql = compose()["services"]["postgres"]["volumes"]
    assert "./infra/postgres-init.sql:/opt/tidegate/postgres-init.sql:ro" in sql
    assert "./infra/compose-postgres-init.sh:/docker-entrypoint-initdb.d/10-tidegate.sh:ro" in sql
    subprocess.run(["bash", str(SCRIPTS / "compose-postgres-init.sh")], env=env, check=True, capture_output=True)
    psql = (tmp_path / "psql.args").read_text()
    # The password goes to the script's \password on stdin (psql sends the server its SCRAM verifier), never on a command line.
    assert password not in psql
    assert (tmp_path / "psql.stdin").read_text() == f"{password}\n{password}\n"
    assert psql.splitlines()[-2:] == ["-f", "/opt/tidegate/postgres-init.sql"]
    assert "\\password tidegate" in (REPO_ROOT / "infra" / "postgres-init.sql").read_text()
    record = tmp_path / "migrate.env"
    cli = tmp_path / "tidegate"
    cli.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$TIDEGATE_DATABASE_URL" "$@" >{record}\n')
    cli.chmod(0o755)
    env = os.environ | {"OPERATOR_PASSWORD_FILE": str(made / "postgres" / "operator" / "password"), "TIDEGATE_CLI": str(cli)}
    subprocess.run(["bash", str(SCRIPTS / "compose-migrate.sh")], env=env, check=True, capture_output=True)
    assert record.read_text().splitlines() == [f"postgresql://tidegate:{password}@postgres:5432/tidegate", "db", "migrate"]
    assert compose()["services"]["migrate"]["environment"]["OPERATOR_PASSWORD_FILE"] == f"{CONTAINER_ROOT}/postgres/operator/password"
    assert volume_at("migrate", f"{CONTAINER_ROOT}/postgres/operator/password") == "postgres-operator"
    assert volume_at("postgres", compose()["services"]["postgres"]["environment"]["OPERATOR_PASSWORD_FILE"]) == "postgres-operator"


def test_a_one_shot_refuses_to_run_without_the_secrets_it_needs(tmp_path: Path) -> None:
    env = os.environ | {"OPERATOR_PASSWORD_FILE": str(tmp_path / "missing"), "TIDEGATE_CLI": "false"}
    run = subprocess.run(["bash", str(SCRIPTS / "compose-migrate.sh")], env=env, capture_output=True, text=True)
    assert run.returncode != 0
    assert "secrets-init" in run.stderr
