"""`tidegate infra rotate-login admin`: the administration login rotates too, and is never retired under a broker using it.

Rotation probe F4: admin's password had no rotation at all (`rotate-login admin` was refused: it is also in each broker's
`server.properties`, as the brokers' own login to each other). It now rotates as every other login, the new password on
the other SCRAM mechanism; `infra up` writes each node's `server.properties` with admin's mechanism and password as
`admin.properties` has them, so the restart between the two steps moves the brokers to it, and `--finish` refuses to
retire the former password while a node's file still holds it (that node would lose its login to the others).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from servicekit import ADMIN, REPO_ROOT
from servicekit.bus_auth import client_properties
from servicekit.bus_rotation import RotationRefused, finish_rotation, former_file
from servicekit.private_files import write_private


def _admin_mid_rotation(folder: Path) -> None:
    write_private(folder / f"{ADMIN}.properties", client_properties(ADMIN, "new-pw", "127.0.0.1:1", "SCRAM-SHA-256"))
    write_private(former_file(folder, ADMIN), client_properties(ADMIN, "former-pw", "127.0.0.1:1", "SCRAM-SHA-512"))


async def test_finish_refuses_while_a_broker_still_logs_in_with_the_former_password(tmp_path: Path) -> None:
    _admin_mid_rotation(tmp_path)
    node = tmp_path / "kafka" / "server.properties"  # as infra.sh wrote it at the node's start, before the rotation
    node.parent.mkdir()
    node.write_text('listener.name.broker.scram-sha-512.sasl.jaas.config=… username="admin" password="former-pw";\n')
    with pytest.raises(RotationRefused, match=r"restart each .*nothing retired"):
        await finish_rotation("127.0.0.1:1", tmp_path, ADMIN, broker_configs=[node])  # the broker is never reached
    assert former_file(tmp_path, ADMIN).exists()


async def test_finish_refuses_while_a_broker_whose_file_it_cannot_read_is_on_the_former_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under docker compose the node's server.properties is in the container: no file here to read, yet not restarted.

    Before, no file found was taken for every node restarted: `--finish` retired the former password the broker still
    logged in to the others with. The broker itself says which mechanism each node's own login is on.
    """
    import servicekit.bus_rotation as rotation

    _admin_mid_rotation(tmp_path)
    asked = []

    async def brokers(bootstrap: str, credentials_dir: Path) -> dict[str, str | None]:
        asked.append(bootstrap)
        return {"1": "SCRAM-SHA-512"}  # started before the rotation moved admin to SCRAM-SHA-256

    monkeypatch.setattr(rotation, "inter_broker_mechanisms", brokers)
    missing = tmp_path / "kafka" / "server.properties"  # not on this host
    with pytest.raises(RotationRefused, match=r"node 1 \(SCRAM-SHA-512\).*nothing retired"):
        await finish_rotation("127.0.0.1:1", tmp_path, ADMIN, broker_configs=[missing])
    assert asked == ["127.0.0.1:1"]
    assert former_file(tmp_path, ADMIN).exists()


async def test_admin_is_rotated_only_knowing_where_the_brokers_keep_it(tmp_path: Path) -> None:
    _admin_mid_rotation(tmp_path)
    with pytest.raises(RotationRefused, match=r"tidegate infra rotate-login admin"):
        await finish_rotation("127.0.0.1:1", tmp_path, ADMIN)


@pytest.mark.parametrize(("named", "mechanism"), [("SCRAM-SHA-256", "SCRAM-SHA-256"), (None, "SCRAM-SHA-512")])
def test_the_readiness_check_logs_in_on_the_mechanism_the_file_names(tmp_path: Path, named: str | None, mechanism: str) -> None:
    """`infra up` checks the broker as admin with admin.properties: after a rotation that is SCRAM-SHA-256."""
    spec = importlib.util.spec_from_file_location("kafka_ready", REPO_ROOT / "infra" / "kafka_ready.py")
    assert spec is not None
    assert spec.loader is not None
    ready = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ready)
    path = tmp_path / "admin.properties"
    text = client_properties(ADMIN, "pw", "127.0.0.1:1", named or "SCRAM-SHA-512")
    path.write_text(text if named else "\n".join(line for line in text.splitlines() if not line.startswith("sasl.mechanism=")))
    assert ready.read_properties(str(path)) == (ADMIN, "pw", mechanism)
