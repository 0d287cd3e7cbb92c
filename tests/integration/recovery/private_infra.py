"""A Kafka broker and a PostgreSQL of the recovery tests' own, which they may stop, kill and restart.

The shared infrastructure must never be killed, so the recovery tests run `infra/infra.sh` with
`TIDEGATE_INFRA_DIR` in a scratch directory (its own data, credentials, pid files) on free ports, as the
chaos suite does. The Kafka jars are this checkout's (infra.sh reads them from here), so nothing is downloaded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from servicekit import REPO_ROOT, KitSettings, create_pool
from systems.seed import seed_demo
from tidegate.database import migrate

INFRA_SH = REPO_ROOT / "infra" / "infra.sh"


@dataclass(frozen=True)
class PrivateInfra:
    """A broker and a database of the recovery tests' own, started by `infra.sh` in a scratch infrastructure directory."""

    root: Path
    env: dict[str, str]
    kafka_bootstrap: str
    database_url: str  # the operator's (migrator's) role
    kafka_credentials_dir: Path
    db_credentials_dir: Path

    def _infra(self, command: str) -> None:
        subprocess.run(["bash", str(INFRA_SH), command], env=self.env, check=True, timeout=240)

    def up(self) -> None:
        """Start whichever of the two is not running (idempotent), and wait until both answer."""
        self._infra("up")

    def kill_kafka(self) -> None:
        """SIGKILL the broker (a crash: no controlled shutdown), and wait until it is gone."""
        _kill_and_wait(int((self.root / ".infra" / "kafka" / "kafka.pid").read_text()), signal.SIGKILL)

    def stop_postgres_fast(self) -> None:
        """PostgreSQL's fast shutdown (SIGINT to the postmaster: every session is terminated), and wait until it is gone."""
        pid_file = self.root / ".infra" / "pg" / "data" / "postmaster.pid"
        _kill_and_wait(int(pid_file.read_text().splitlines()[0]), signal.SIGINT)


def _kill_and_wait(pid: int, sig: signal.Signals, timeout_s: float = 60.0) -> None:
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout_s
    while Path(f"/proc/{pid}").exists() and "Z" not in _state(pid):
        assert time.monotonic() < deadline, f"pid {pid} still alive {timeout_s}s after {sig.name}"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "Z"


def scratch_infra(root: Path) -> dict[str, str]:
    """`root/.infra` for `infra.sh` (`TIDEGATE_INFRA_DIR`); the environment entry that points it there."""
    (root / ".infra").mkdir()
    os.chmod(root, 0o755)  # the postgres user traverses it
    return {"TIDEGATE_INFRA_DIR": str(root / ".infra")}


async def migrate_and_seed(kit: KitSettings) -> None:
    """The services' schemas and roles (prefix `recovery_`), and the demo's systems of record for tenant acme."""
    await migrate(kit, role_prefix="recovery_")
    pool = await create_pool(kit.operator_database_url, max_size=1)
    try:
        await seed_demo(pool, ("acme",))
    finally:
        await pool.close()
