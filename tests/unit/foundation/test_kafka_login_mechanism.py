"""A Kafka login moved to the other SCRAM mechanism by `tidegate infra rotate-login` is used with that mechanism.

As a service after a rotation: it must log in with the mechanism its new password is set on, whether it reads its login
from the principal's file or is given the password in `TIDEGATE_KAFKA_PASSWORD` (a secret store) with the mechanism beside
it. Before, every client logged in with SCRAM-SHA-512 whatever the file said, so a rotated login was refused.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from servicekit import KitSettings, kafka_options
from servicekit.bus_auth import client_properties, read_mechanism


def _file(folder: Path, principal: str, mechanism: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{principal}.properties").write_text(client_properties(principal, "pw", "127.0.0.1:1", mechanism))


def test_a_rotated_file_logs_in_with_the_mechanism_it_names(tmp_path: Path) -> None:
    _file(tmp_path, "policy", "SCRAM-SHA-256")
    options = kafka_options(KitSettings(kafka_credentials_dir=tmp_path), "policy")
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert options["sasl_plain_password"] == "pw"


def test_a_file_from_before_rotations_logs_in_with_scram_sha_512(tmp_path: Path) -> None:
    (tmp_path / "agent.properties").write_text('sasl.jaas.config=x required username="agent" password="pw";\n')
    assert read_mechanism(tmp_path / "agent.properties") == "SCRAM-SHA-512"
    assert kafka_options(KitSettings(kafka_credentials_dir=tmp_path), "agent")["sasl_mechanism"] == "SCRAM-SHA-512"


def test_a_password_from_a_secret_store_takes_the_mechanism_set_beside_it(tmp_path: Path) -> None:
    kit = KitSettings(kafka_credentials_dir=tmp_path, kafka_password=SecretStr("pw"), kafka_sasl_mechanism="SCRAM-SHA-256")
    assert kafka_options(kit, "executor")["sasl_mechanism"] == "SCRAM-SHA-256"


def test_a_mechanism_the_broker_does_not_offer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        KitSettings(kafka_sasl_mechanism="PLAIN")  # type: ignore[arg-type]
    _file(tmp_path, "ops", "PLAIN")
    with pytest.raises(ValueError, match=r"sasl\.mechanism=PLAIN"):
        kafka_options(KitSettings(kafka_credentials_dir=tmp_path), "ops")
