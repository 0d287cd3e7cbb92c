"""How a Kafka client logs in: settings + principal in, client options out (SASL/SCRAM, SHA-512 or SHA-256 during a rotation).

`kafka_options` is the one place that turns a principal into the options every client takes: the
kit's producer (`servicekit.producer`), its consumers and the admin clients are all aiokafka's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from servicekit.settings import KitSettings

__all__ = ["LOGIN_KEYS", "MECHANISM", "MECHANISMS", "PROTOCOL", "client_properties", "kafka_options", "read_mechanism", "read_password"]

PROTOCOL = "SASL_PLAINTEXT"
MECHANISM = "SCRAM-SHA-512"
# The broker accepts both: SCRAM keeps one credential per mechanism per user, so a rotation sets the new password on the
# mechanism the login does not use and removes the other afterwards (`servicekit.bus_admin.rotate_login`): old and new
# both log in meanwhile. A login's properties file names its mechanism (`sasl.mechanism`).
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
# The options of `kafka_options` that log a client in, as its `login` below sets them (the rest, a request timeout,
# are the producer's alone: `servicekit.Producer.login` hands only these to the bus's other clients).
LOGIN_KEYS = ("security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password")
_PASSWORD = re.compile(r'password="([^"]*)"')
_MECHANISM = re.compile(r"^sasl\.mechanism=(\S+)\s*$", re.MULTILINE)


def read_password(path: Path) -> str | None:
    """The password in a client properties file's `sasl.jaas.config`, or None when there is no such file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    found = _PASSWORD.search(text)
    if found is None:
        raise ValueError(f"{path}: no password in sasl.jaas.config")
    return found.group(1)


def read_mechanism(path: Path) -> str:
    """The SCRAM mechanism a client properties file logs in with (`sasl.mechanism`); SCRAM-SHA-512 when it names none."""
    try:
        found = _MECHANISM.search(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return MECHANISM
    mechanism = MECHANISM if found is None else found.group(1)
    if mechanism not in MECHANISMS:
        raise ValueError(f"{path}: sasl.mechanism={mechanism}: one of {', '.join(MECHANISMS)}")
    return mechanism


def client_properties(principal: str, password: str, bootstrap: str, mechanism: str = MECHANISM) -> str:
    """A Java client properties file that logs in as `principal` (what outside clients are given)."""
    return (
        f"# Kafka client settings of principal '{principal}' (keep secret, never commit).\n"
        f"bootstrap.servers={bootstrap}\n"
        f"security.protocol={PROTOCOL}\n"
        f"sasl.mechanism={mechanism}\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{principal}" password="{password}";\n'
    )


def kafka_options(kit: KitSettings, principal: str) -> dict[str, Any]:
    """Keyword arguments of an aiokafka client that logs in as `principal` (or as `kit.kafka_principal` when set).

    The password is `kit.kafka_password`, else the one in `<kafka_credentials_dir>/<principal>.properties`.
    Without either, no login options (a broker without authentication; one with it refuses the client).
    With `kit.kafka_request_timeout_ms` set, every client (and so every producer's delivery timeout) uses it.
    """
    name = kit.kafka_principal or principal
    timeout: dict[str, Any] = {} if kit.kafka_request_timeout_ms is None else {"request_timeout_ms": kit.kafka_request_timeout_ms}
    path = kit.kafka_credentials_dir / f"{name}.properties"
    if kit.kafka_password is not None:
        password: str | None = kit.kafka_password.get_secret_value()
    else:
        password = read_password(path)
    if password is None:
        return timeout
    mechanism = kit.kafka_sasl_mechanism or read_mechanism(path)
    login = {"security_protocol": PROTOCOL, "sasl_mechanism": mechanism, "sasl_plain_username": name, "sasl_plain_password": password}
    return login | timeout
