"""Rotating a Kafka login with an overlap: the new password on the other SCRAM mechanism, the former one removed after.

SCRAM keeps one credential per mechanism per user, and the broker accepts SCRAM-SHA-512 and SCRAM-SHA-256
(`servicekit.bus_auth.MECHANISMS`). `start_rotation` sets a new password on the mechanism the principal's properties file
does not use and writes the file anew (new password, new mechanism), keeping the former login beside it
(`<principal>.properties.former`, 0600): until `finish_rotation` retires the former mechanism's credential, a client
still holding the former file logs in as before, and one given the new file (a service restarted, an outside client
handed it) logs in with the new one. `rotate_now` does both at once (a password that may have leaked). Each checks at
the broker, by logging in, what it promises: the new login works, the former is refused once retired.

A former credential is retired by overwriting it with a password nobody holds (`unknowable_password`), never deleted: a
Kafka 4.1.1 broker restarted after a SCRAM credential was deleted refused every SCRAM-SHA-512 login (admin's and each
service's), so the restart that ends a leaked password's sessions took the whole bus down.
docs/security/bus.md, "Rotating a login".
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from servicekit.bus_admin import alter_scram, unknowable_password
from servicekit.bus_auth import MECHANISMS, PROTOCOL, client_properties, kafka_options, read_mechanism, read_password
from servicekit.bus_rights import ADMIN
from servicekit.private_files import write_private
from servicekit.settings import KitSettings

__all__ = [
    "Rotated",
    "RotationRefused",
    "broker_still_on",
    "finish_rotation",
    "former_file",
    "inter_broker_mechanisms",
    "logs_in",
    "rotate_now",
    "session_max_s",
    "start_rotation",
]


class RotationRefused(RuntimeError):
    """A rotation that cannot be done as asked (nothing was changed); the message says what to do."""


@dataclass(frozen=True)
class Rotated:
    """Where a principal's login stands after a step, as checked at the broker."""

    principal: str
    mechanism: str  # what the properties file logs in with now
    new_logs_in: bool
    former_mechanism: str
    former_refused: bool  # the former password, tried on its mechanism: refused (False while the overlap lasts)
    settled_s: float = 0.0  # how long the broker took to show what was set (0: at the first try)


def former_file(credentials_dir: Path, principal: str) -> Path:
    """Where the login a rotation replaced is kept until it is finished."""
    return credentials_dir / f"{principal}.properties.former"


class _RefusalExpected(logging.Filter):
    """Drops aiokafka's `Unable connect … SaslAuthenticationFailed` while `logs_in` tries a login: a refusal is its answer.

    `tidegate infra rotate-login admin --finish` printed that line, raw, before "the former … is refused": the check
    passing read as an error (upgrade21 F7). Other failures (a broker not reached) are still logged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "SaslAuthenticationFailed" not in record.getMessage()


_AIOKAFKA_CLIENT = logging.getLogger("aiokafka.client")


async def logs_in(bootstrap: str, principal: str, mechanism: str, password: str) -> bool:
    """Whether the broker lets `principal` log in with `password` on `mechanism` (what a holder of it would try)."""
    refusal = _RefusalExpected()
    _AIOKAFKA_CLIENT.addFilter(refusal)
    try:
        return await _logs_in(bootstrap, principal, mechanism, password)
    finally:
        _AIOKAFKA_CLIENT.removeFilter(refusal)


async def _logs_in(bootstrap: str, principal: str, mechanism: str, password: str) -> bool:
    client = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        security_protocol=PROTOCOL,
        sasl_mechanism=mechanism,
        sasl_plain_username=principal,
        sasl_plain_password=password,
        request_timeout_ms=10000,
    )
    try:
        await client.start()
    except KafkaError:
        return False
    finally:
        await client.close()
    return True


def _current(credentials_dir: Path, principal: str, broker_configs: Sequence[Path] | None) -> tuple[Path, str, str]:
    if principal == ADMIN and broker_configs is None:
        raise RotationRefused(
            "admin's password is also in the brokers' server.properties: rotate it with `tidegate infra rotate-login admin`, "
            "which knows where they are (a restart of each node between the two steps)"
        )
    path = credentials_dir / f"{principal}.properties"
    password = read_password(path)
    if password is None:
        raise RotationRefused(f"no login for {principal} at {path}: run `tidegate infra up` (it makes every principal's)")
    return path, read_mechanism(path), password


def _other(mechanism: str) -> str:
    return next(m for m in MECHANISMS if m != mechanism)


async def _alter(bootstrap: str, credentials_dir: Path, upsert: dict[str, tuple[str, str]]) -> None:
    options = kafka_options(KitSettings(kafka_credentials_dir=credentials_dir), ADMIN)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(options | {"request_timeout_ms": 30000}))
    await admin.start()
    try:
        await alter_scram(admin, upsert)
    finally:
        await admin.close()


REAUTH = "connections.max.reauth.ms"


async def session_max_s(bootstrap: str, credentials_dir: Path) -> float | None:
    """The longest a login lasts at the broker, in seconds (its nodes' longest `connections.max.reauth.ms`); None: no end.

    Past it the broker closes a connection at its first request (a client that does not re-authenticate, as aiokafka,
    logs in again with the password it holds then), so a session opened with a retired password ends within it.
    """
    options = kafka_options(KitSettings(kafka_credentials_dir=credentials_dir), ADMIN)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(options | {"request_timeout_ms": 30000}))
    await admin.start()
    try:
        nodes = [str(broker.nodeId) for broker in admin._client.cluster.brokers()]
        described: Any = await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, node, {REAUTH: None}) for node in nodes])
    finally:
        await admin.close()
    values = [
        int(value or 0) for response in described for *_, entries in response.resources for name, value, *_ in entries if name == REAUTH
    ]
    if not values or min(values) <= 0:  # a node that never ends a session bounds nothing
        return None
    return max(values) / 1000


INTER_BROKER = "sasl.mechanism.inter.broker.protocol"


async def inter_broker_mechanisms(bootstrap: str, credentials_dir: Path) -> dict[str, str | None]:
    """Each broker node's SCRAM mechanism for its own login to the others (`sasl.mechanism.inter.broker.protocol`), by node id.

    `infra up` and `infra/compose-kafka.sh` set it to admin's mechanism at each node's start, and a rotation of admin always
    moves admin to the other mechanism: a node still on the former mechanism has not been restarted since the rotation
    began, wherever its `server.properties` is (a container's, another host's).
    """
    options = kafka_options(KitSettings(kafka_credentials_dir=credentials_dir), ADMIN)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(options | {"request_timeout_ms": 30000}))
    await admin.start()
    try:
        nodes = [str(broker.nodeId) for broker in admin._client.cluster.brokers()]
        described: Any = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, node, {INTER_BROKER: None}) for node in nodes]
        )
    finally:
        await admin.close()
    found: dict[str, str | None] = dict.fromkeys(nodes)
    for response in described:
        for _code, _message, _type, node, entries in response.resources:
            found[str(node)] = next((value for name, value, *_ in entries if name == INTER_BROKER), None)
    return found


async def _brokers_behind(bootstrap: str, credentials_dir: Path, mechanism: str) -> list[str]:
    """The broker nodes whose own login to the others is not on `mechanism` (admin's now); refused when they cannot be asked."""
    try:
        mechanisms = await inter_broker_mechanisms(bootstrap, credentials_dir)
    except (KafkaError, OSError) as exc:
        raise RotationRefused(
            f"could not ask the brokers which login they use to each other ({type(exc).__name__}: {exc}): nothing retired; try again"
        ) from exc
    return [f"node {node} ({found or 'unknown'})" for node, found in sorted(mechanisms.items()) if found != mechanism]


SETTLE_S = 10.0
"""How long a check waits for the broker to show a credential just set: the controller commits it, the broker applies it
from the metadata log a moment later (a loaded broker took over a second), so a first login may still see the old one."""


async def _until(probe: Callable[[], Awaitable[bool]], wanted: bool, deadline: float) -> tuple[bool, bool]:
    """`probe()` again every 0.5 s until it answers `wanted` or the deadline passes: its last answer, and whether it was tried again."""
    again = False
    while (found := await probe()) != wanted and time.monotonic() < deadline:
        again = True
        await asyncio.sleep(0.5)
    return found, again


async def _checked(
    bootstrap: str, principal: str, login: tuple[str, str], former: tuple[str, str], *, former_refused: bool, settle_s: float = SETTLE_S
) -> Rotated:
    """Where `principal` stands, found by logging in with its (mechanism, password) `login` and with the `former` one.

    Each is tried again for up to `settle_s` until it shows what was set (the new login works; the former is refused, or
    still works during an overlap): a broker slow to apply a credential is not reported as a failed rotation.
    """
    started = time.monotonic()
    deadline = started + settle_s
    new_logs_in, new_again = await _until(lambda: logs_in(bootstrap, principal, *login), True, deadline)
    former_logs_in, former_again = await _until(lambda: logs_in(bootstrap, principal, *former), not former_refused, deadline)
    settled = time.monotonic() - started if new_again or former_again else 0.0
    return Rotated(principal, login[0], new_logs_in, former[0], not former_logs_in, settled_s=settled)


async def start_rotation(bootstrap: str, credentials_dir: Path, principal: str, *, broker_configs: Sequence[Path] | None = None) -> Rotated:
    """A new password on the other mechanism, written to the principal's file; the former one keeps working until finished.

    `admin` only with `broker_configs` (the nodes' `server.properties`: see `finish_rotation`).
    """
    path, mechanism, former = _current(credentials_dir, principal, broker_configs)
    kept = former_file(credentials_dir, principal)
    if kept.exists():
        raise RotationRefused(
            f"a rotation of {principal} is under way (its former login is in {kept}): finish it first "
            f"(`tidegate infra rotate-login {principal} --finish`), once every client has the new file"
        )
    new, password = _other(mechanism), secrets.token_urlsafe(24)
    await _alter(bootstrap, credentials_dir, {principal: (new, password)})
    write_private(kept, path.read_text(encoding="utf-8"))
    write_private(path, client_properties(principal, password, bootstrap, new))
    return await _checked(bootstrap, principal, (new, password), (mechanism, former), former_refused=False)


def broker_still_on(configs: Sequence[Path], password: str) -> list[Path]:
    """The brokers' `server.properties` among `configs` that still hold `password` (admin's, written at each node's start)."""
    return [path for path in configs if path.is_file() and f'password="{password}"' in path.read_text(encoding="utf-8")]


async def finish_rotation(
    bootstrap: str, credentials_dir: Path, principal: str, *, broker_configs: Sequence[Path] | None = None
) -> Rotated:
    """Retire the former password's credential: from now on only the file's login is accepted.

    `admin` is also the brokers' own login to each other, written into each node's `server.properties` at its start: its
    rotation is finished only once no file of `broker_configs` holds the former password and every node the broker
    knows logs in to the others on admin's new mechanism (`inter_broker_mechanisms`: every node restarted since, also one
    whose file this command cannot read).
    """
    path, mechanism, password = _current(credentials_dir, principal, broker_configs)
    kept = former_file(credentials_dir, principal)
    former = read_password(kept)
    if former is None:
        raise RotationRefused(f"no rotation of {principal} under way: start one with `tidegate infra rotate-login {principal}`")
    if principal == ADMIN and (stale := broker_still_on(broker_configs or (), former)):
        raise RotationRefused(
            f"the broker node(s) of {', '.join(map(str, stale))} still log in to each other with admin's former password: restart "
            "each (`tidegate infra down && tidegate infra up`; a cluster: one node at a time), then finish; nothing retired"
        )
    if principal == ADMIN and (behind := await _brokers_behind(bootstrap, credentials_dir, mechanism)):
        # Their server.properties may be where this command cannot read them (docker compose, another host): the brokers say.
        raise RotationRefused(
            f"broker {', '.join(behind)} still log(s) in to the others with admin's former login, not {mechanism}: restart "
            "each (`tidegate infra down && tidegate infra up`, under compose the kafka container; a cluster: one node at a "
            "time), then finish; nothing retired"
        )
    old = read_mechanism(kept)
    if old == mechanism:  # cannot happen through these commands; retiring it would retire the current login
        raise RotationRefused(f"{kept} and {path} use the same mechanism {old}: nothing retired; fix or delete {kept}")
    await _alter(bootstrap, credentials_dir, {principal: (old, unknowable_password())})
    done = await _checked(bootstrap, principal, (mechanism, password), (old, former), former_refused=True)
    if done.former_refused:
        kept.unlink()
    return done


async def rotate_now(bootstrap: str, credentials_dir: Path, principal: str, *, broker_configs: Sequence[Path] | None = None) -> Rotated:
    """A password that may have leaked: the new one set and every former one retired at once, no overlap.

    `admin` only with `broker_configs`: each node must then be restarted at once (it logs in to the others with the former).
    """
    path, mechanism, former = _current(credentials_dir, principal, broker_configs)
    new, password = _other(mechanism), secrets.token_urlsafe(24)
    # Two requests: the broker alters a user once per request. The new password replaces a former one mid-rotation on its
    # mechanism; the file's is then overwritten with one nobody holds.
    await _alter(bootstrap, credentials_dir, {principal: (new, password)})
    await _alter(bootstrap, credentials_dir, {principal: (mechanism, unknowable_password())})
    write_private(path, client_properties(principal, password, bootstrap, new))
    former_file(credentials_dir, principal).unlink(missing_ok=True)
    return await _checked(bootstrap, principal, (new, password), (mechanism, former), former_refused=True)
