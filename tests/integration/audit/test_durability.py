"""Nothing is lost: not when the audit service is SIGKILLed, not when PostgreSQL goes away.

Both tests end with the same check: every offset Kafka holds under the test's prefix is in the log,
exactly once, and the chains verify.
"""

from __future__ import annotations

import asyncio
import glob
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ports import free_port

from servicekit import REPO_ROOT, Keyring, KitSettings
from services.audit.app import build
from services.audit.repository import PostgresAuditLog
from services.audit.settings import AuditSettings
from services.audit.verify import verify_log
from tidegate.database import migrate


async def _produce(producer: Any, topic: str, start: int, count: int) -> None:
    for i in range(start, start + count):
        await producer.send(topic, f'{{"n": {i}}}'.encode(), partition=i % 6)
    await producer.flush()


async def _logged(probe: Any, dsn: str | None = None) -> int:
    return sum(len(v) for v in (await probe.logged(dsn)).values())


async def _verify(dsn: str, kit: KitSettings) -> Any:
    log = await PostgresAuditLog.connect(dsn)
    try:
        return await verify_log(log, Keyring.load(kit.keys_dir, "audit"), prefix=kit.topic_prefix)
    finally:
        await log.close()


def _spawn(kit: KitSettings, log_path: Path) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "TIDEGATE_TOPIC_PREFIX": kit.topic_prefix,
        "TIDEGATE_DATABASE_URL": kit.database_url,
        "TIDEGATE_KAFKA_BOOTSTRAP": kit.kafka_bootstrap,
        "TIDEGATE_KEYS_DIR": str(kit.keys_dir),
        "TIDEGATE_AUDIT_BATCH_MAX_RECORDS": "50",
        "TIDEGATE_AUDIT_CHECKPOINT_INTERVAL_S": "0.3",
        "TIDEGATE_AUDIT_TOPIC_DISCOVERY_MS": "2000",
    }
    with log_path.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "services.audit"], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


async def test_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(
    kit: KitSettings, producer: Any, probe: Any, wait_for: Any, tmp_path: Path
) -> None:
    topic = kit.topic_prefix + "actions.proposed"
    log_path = tmp_path / "audit.log"
    first = _spawn(kit, log_path)
    try:
        writer = asyncio.create_task(_produce(producer, topic, 0, 3000))
        await wait_for(lambda: _logged(probe), timeout=60, what="the audit subprocess recording")
        first.send_signal(signal.SIGKILL)  # mid-stream: batches in flight, offsets not yet committed
        assert await asyncio.to_thread(first.wait, 10) == -signal.SIGKILL
        await writer
        logged_at_kill = await _logged(probe)
        assert logged_at_kill < 3000, "the kill came after everything was recorded: the test proved nothing"
        await _produce(producer, topic, 3000, 500)
    finally:
        if first.poll() is None:
            first.kill()
    second = _spawn(kit, log_path)
    try:
        await wait_for(probe.matches, timeout=90, what="every record in the log once, after the restart")
    finally:
        second.send_signal(signal.SIGTERM)
        await asyncio.to_thread(second.wait, 30)
    assert sum(len(v) for v in (await probe.kafka()).values()) >= 3500
    assert (await _verify(kit.database_url, kit)).ok


# --- a PostgreSQL of the test's own, to stop and start -----------------------------------------


@pytest.fixture
def own_postgres() -> Iterator[tuple[str, Any]]:
    """A throwaway PostgreSQL cluster (never the shared one); yields its DSN and a pg_ctl runner."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not bins or os.geteuid() != 0:
        pytest.skip("needs Debian's PostgreSQL binaries and root (to run them as the postgres user)")
    bindir = Path(bins[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="tidegate-audit-pg-"))
    root.chmod(0o755)
    shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()

    def as_postgres(*args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=120)

    def pg_ctl(action: str) -> None:
        extra = ["-m", "immediate"] if action == "stop" else ["-l", str(root / "pg.log")]
        as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "60", *extra, action)

    as_postgres(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{root}'\nfsync = on\nsynchronous_commit = on\n"
        )
    pg_ctl("start")
    try:
        password = secrets.token_urlsafe(16)
        sql = f"CREATE ROLE tidegate LOGIN PASSWORD '{password}' CREATEROLE; CREATE DATABASE tidegate OWNER tidegate;"
        for statement in sql.split("; "):
            as_postgres(str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-qc", statement)
        yield f"postgresql://tidegate:{password}@127.0.0.1:{port}/tidegate", pg_ctl
    finally:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


async def test_a_postgres_crash_and_restart_loses_nothing(
    kit: KitSettings, own_postgres: tuple[str, Any], producer: Any, probe: Any, wait_for: Any, tmp_path: Path
) -> None:
    dsn, pg_ctl = own_postgres
    own = kit.model_copy(update={"database_url": dsn, "db_credentials_dir": tmp_path / "db"})
    await migrate(own)  # as the operator: roles and schemas of this cluster of the test's own
    svc = build(own, AuditSettings(batch_max_records=100, checkpoint_interval_s=0.3, topic_discovery_ms=2000))
    await svc.start()
    try:
        topic = kit.topic_prefix + "actions.results"
        await _produce(producer, topic, 0, 300)
        await wait_for(lambda: _logged(probe, dsn), timeout=60, what="recording before the crash")
        await asyncio.to_thread(pg_ctl, "stop")  # immediate: like a crash, no clean shutdown
        await _produce(producer, topic, 300, 300)
        await wait_for(lambda: svc.recorder.retries > 0, timeout=60, what="the audit to hit the outage and wait")
        await asyncio.to_thread(pg_ctl, "start")
        await wait_for(lambda: probe.matches(dsn), timeout=90, what="every record in the log once, after PostgreSQL came back")
    finally:
        await svc.stop()
    assert sum(len(v) for v in (await probe.kafka()).values()) >= 600
    assert (await _verify(dsn, kit)).ok
