"""`tidegate infra rotate-login`: a Kafka password rotated on the real broker, as the operator and as holders of each login.

Before it, a rotation was: delete `<principal>.properties`, `tidegate infra up`. The broker then knew only the new
password, so every client still holding the former file (an outside agent, a tool service, a service not restarted yet)
was refused at its next connection: no overlap. SCRAM keeps one credential per mechanism per user, and the broker now
accepts SCRAM-SHA-512 and SCRAM-SHA-256: the new password goes on the mechanism the login does not use, both log in
until `--finish` removes the former; `--leaked` gives no overlap. Each test rotates a principal of its own (a user made
for it, removed after), never one the running deployment logs in with.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from servicekit import ADMIN, KitSettings, kafka_options
from servicekit.bus_admin import alter_scram, unknowable_password
from servicekit.bus_auth import MECHANISMS, client_properties, read_mechanism, read_password
from servicekit.bus_rotation import RotationRefused, finish_rotation, former_file, logs_in, rotate_now, start_rotation
from servicekit.private_files import write_private

pytestmark = pytest.mark.integration


async def _as_admin(infra: Any, folder: Path, **changes: Any) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap, **kafka_options(KitSettings(kafka_credentials_dir=folder), ADMIN))
    await admin.start()
    try:
        await alter_scram(admin, **changes)
    finally:
        await admin.close()


@pytest.fixture
async def login(infra: Any, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """A principal of this test with its properties file, in a credentials folder beside a copy of admin's login."""
    folder = tmp_path / "credentials"
    folder.mkdir(mode=0o700)
    shutil.copy(KitSettings().kafka_credentials_dir / f"{ADMIN}.properties", folder / f"{ADMIN}.properties")
    principal, password = f"t-rotate-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await _as_admin(infra, folder, users={principal: ("SCRAM-SHA-512", password)})
    write_private(folder / f"{principal}.properties", client_properties(principal, password, infra.kafka_bootstrap))
    for _ in range(50):  # a credential the controller committed reaches the broker's metadata a moment later
        if await logs_in(infra.kafka_bootstrap, principal, "SCRAM-SHA-512", password):
            break
        await asyncio.sleep(0.2)
    try:
        yield principal, folder
    finally:
        for mechanism in MECHANISMS:  # retired, not deleted: a deleted SCRAM credential locks SCRAM-SHA-512 out at the next broker start
            with contextlib.suppress(KafkaError):
                await _as_admin(infra, folder, users={principal: (mechanism, unknowable_password())})


def _held(folder: Path, principal: str) -> tuple[str, str]:
    """What a client handed the principal's file now holds: its mechanism and password."""
    path = folder / f"{principal}.properties"
    password = read_password(path)
    assert password is not None
    return read_mechanism(path), password


async def test_both_passwords_log_in_until_the_rotation_is_finished_then_only_the_new(infra: Any, login: tuple[str, Path]) -> None:
    principal, folder = login
    bootstrap = infra.kafka_bootstrap
    outside = _held(folder, principal)  # an outside client, handed the file last quarter
    assert await logs_in(bootstrap, principal, *outside)

    started = await start_rotation(bootstrap, folder, principal)

    assert started.new_logs_in
    assert not started.former_refused
    given = _held(folder, principal)  # a client restarted with the new file
    assert given != outside
    assert given[0] != outside[0]  # the other mechanism: the broker keeps a credential per mechanism
    assert await logs_in(bootstrap, principal, *given)
    assert await logs_in(bootstrap, principal, *outside)  # the overlap: not refused while it switches
    assert read_password(former_file(folder, principal)) == outside[1]
    with pytest.raises(RotationRefused, match="under way"):
        await start_rotation(bootstrap, folder, principal)  # a second start would overwrite the overlap's former login

    finished = await finish_rotation(bootstrap, folder, principal)

    assert finished.former_refused
    assert finished.new_logs_in
    assert not await logs_in(bootstrap, principal, *outside)  # the holder of the former file: refused now
    assert await logs_in(bootstrap, principal, *given)
    assert not former_file(folder, principal).exists()
    # The next quarter's rotation moves it back to the first mechanism, with an overlap again.
    again = await start_rotation(bootstrap, folder, principal)
    assert again.mechanism == outside[0]
    assert await logs_in(bootstrap, principal, *given)


async def test_a_leaked_password_is_refused_at_once_even_mid_rotation(infra: Any, login: tuple[str, Path]) -> None:
    principal, folder = login
    bootstrap = infra.kafka_bootstrap
    stolen = _held(folder, principal)
    await start_rotation(bootstrap, folder, principal)
    rotating = _held(folder, principal)  # the leak is found while a routine rotation overlaps: both are suspect

    rotated = await rotate_now(bootstrap, folder, principal)

    assert rotated.new_logs_in
    assert rotated.former_refused
    assert not await logs_in(bootstrap, principal, *stolen)
    assert not await logs_in(bootstrap, principal, *rotating)
    assert await logs_in(bootstrap, principal, *_held(folder, principal))
    assert not former_file(folder, principal).exists()


async def test_admin_and_a_principal_without_a_login_are_refused_before_anything_changes(infra: Any, login: tuple[str, Path]) -> None:
    _, folder = login
    with pytest.raises(RotationRefused, match=r"server\.properties"):
        await start_rotation(infra.kafka_bootstrap, folder, ADMIN)
    with pytest.raises(RotationRefused, match="no login"):
        await start_rotation(infra.kafka_bootstrap, folder, "t-nobody")
    with pytest.raises(RotationRefused, match="no rotation"):
        await finish_rotation(infra.kafka_bootstrap, folder, login[0])
