"""Fixtures of the recovery tests: a broker and a database of their own (see private_infra.py)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from ports import free_port
from private_infra import INFRA_SH, PrivateInfra, migrate_and_seed, scratch_infra

from servicekit import REPO_ROOT, KitSettings


@pytest.fixture(scope="module")
def private_infra() -> Iterator[PrivateInfra]:
    """Kafka and PostgreSQL of this module's own; the database migrated with the services' roles and seeded with the demo.

    Not under pytest's temporary directory: another pytest session on the machine may make that 0700
    again, and the postgres user must reach the data directory.
    """
    root = Path(tempfile.mkdtemp(prefix="tidegate-recovery-"))
    kafka_port, pg_port = free_port(), free_port()
    env = (
        os.environ
        | scratch_infra(root)
        | {
            "TIDEGATE_KAFKA_PORT": str(kafka_port),
            "TIDEGATE_KAFKA_CONTROLLER_PORT": str(free_port()),
            "TIDEGATE_PG_PORT": str(pg_port),
            "PYTHONPATH": str(REPO_ROOT),  # infra/kafka_principals.py imports the kit
        }
    )
    infra = PrivateInfra(
        root,
        env,
        f"127.0.0.1:{kafka_port}",
        KitSettings(infra_dir=root / ".infra", pg_port=pg_port).operator_database_url,
        root / ".infra" / "kafka" / "credentials",
        root / "db-credentials",
    )
    try:
        infra.up()
        kit = KitSettings(database_url=infra.database_url, db_credentials_dir=infra.db_credentials_dir)
        asyncio.run(migrate_and_seed(kit))
        yield infra
    finally:
        subprocess.run(["bash", str(INFRA_SH), "down"], env=env, timeout=240, check=False)
        shutil.rmtree(root, ignore_errors=True)
