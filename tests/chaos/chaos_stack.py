"""The chaos suite's own stack: Kafka (one node or three) and PostgreSQL on other ports and data dirs, the services, an outside tool.

Nothing here touches the shared infrastructure (127.0.0.1:19092 / 55432): `infra/infra.sh` runs with
`TIDEGATE_INFRA_DIR` in a scratch directory and free ports, and every fault is aimed at a pid this
stack started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from ports import free_port_block

from schemas import ControlTenant, ControlTenantData
from servicekit import REPO_ROOT, KitSettings
from systems.seed import seed_demo
from tidegate.commands._common import publish_control
from tidegate.database import local_superuser_url
from tidegate.demo.tickets import DEMO_TENANTS

HERE = Path(__file__).resolve().parent
INFRA_SH = REPO_ROOT / "infra" / "infra.sh"
INVENTORY_SERVICE = REPO_ROOT / "examples" / "outside_tool_service" / "inventory_service.py"
COPIES = ("policy", "policy.2", "executor", "executor.2", "planner", "approval", "audit")
"""Every service, with two copies of policy and executor in one consumer group each (so a kill rebalances)."""


@dataclass
class ChaosStack:
    """Kafka, PostgreSQL, the services (supervised, with copies) and the outside inventory service, all of this run's own."""

    root: Path
    brokers: int = 1
    base_port: int = field(default_factory=lambda: free_port_block(9))
    supervisor: subprocess.Popen[bytes] | None = None
    tool_service: subprocess.Popen[bytes] | None = None

    @property
    def kafka_port(self) -> int:
        return self.base_port

    @property
    def pg_port(self) -> int:
        return self.base_port + 6

    @property
    def approval_port(self) -> int:
        return self.base_port + 7

    def node_port(self, node: int) -> int:
        """Kafka node `node`'s client port (infra.sh numbers node i's at the first node's + 2(i-1))."""
        return self.kafka_port + 2 * (node - 1)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.node_port(node)}" for node in range(1, self.brokers + 1))

    @property
    def infra_dir(self) -> Path:
        return self.root / "infra"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def tools_dir(self) -> Path:
        return self.root / "tools"

    @property
    def inventory_db(self) -> Path:
        return self.root / "inventory.sqlite3"

    @property
    def admin_dsn(self) -> str:
        """The superuser on this stack's database (what the checks read the systems of record and the audit log with), over its socket."""
        return local_superuser_url(self.kit, "tidegate")

    @property
    def kit(self) -> KitSettings:
        return KitSettings(
            kafka_bootstrap=self.bootstrap,
            kafka_credentials_dir=self.infra_dir / "kafka" / "credentials",
            infra_dir=self.infra_dir,
            pg_port=self.pg_port,
            db_credentials_dir=self.run_dir / "db",
            run_dir=self.run_dir,
            keys_dir=self.run_dir / "keys",
            tools_dir=self.tools_dir,
        )

    def env(self) -> dict[str, str]:
        """The environment of every process of this stack: the CLI, infra.sh, the services."""
        kit = self.kit
        return os.environ | {
            "TIDEGATE_INFRA_DIR": str(self.infra_dir),
            "TIDEGATE_KAFKA_PORT": str(self.kafka_port),
            "TIDEGATE_KAFKA_CONTROLLER_PORT": str(self.kafka_port + 1),
            "TIDEGATE_KAFKA_HEAP_OPTS": "-Xms128m -Xmx512m",
            "TIDEGATE_PG_PORT": str(self.pg_port),
            "TIDEGATE_KAFKA_BOOTSTRAP": kit.kafka_bootstrap,
            "TIDEGATE_KAFKA_CREDENTIALS_DIR": str(kit.kafka_credentials_dir),
            "TIDEGATE_DATABASE_URL": kit.database_url,
            "TIDEGATE_DATABASE_PASSFILE": str(kit.database_passfile),
            "TIDEGATE_DB_CREDENTIALS_DIR": str(kit.db_credentials_dir),
            "TIDEGATE_RUN_DIR": str(kit.run_dir),
            "TIDEGATE_KEYS_DIR": str(kit.keys_dir),
            "TIDEGATE_TOOLS_DIR": str(kit.tools_dir),
            "TIDEGATE_APPROVAL_HTTP_PORT": str(self.approval_port),
            "TIDEGATE_LOG_LEVEL": "WARNING",
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(HERE)]),
        }

    def cli(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run `tidegate <args>` against this stack."""
        return subprocess.run(
            [sys.executable, "-m", "tidegate.cli", *args], env=self.env(), capture_output=True, text=True, check=check, timeout=timeout
        )

    # ---- bring up and down -----------------------------------------------------------------

    async def up(self) -> None:
        """Infrastructure (`tidegate infra up --brokers N`: topics, roles, migrations), seed data, tenant, services, outside tool."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # PostgreSQL runs as `postgres` and must reach its data directory
        self.tools_dir.mkdir(exist_ok=True)
        for spec in [*(REPO_ROOT / "catalog" / "tools").glob("*.yaml"), *(HERE / "tools").glob("*.yaml")]:
            shutil.copy(spec, self.tools_dir / spec.name)
        done = await asyncio.to_thread(self.cli, "infra", "up", "--brokers", str(self.brokers), check=False)
        if done.returncode != 0:
            raise RuntimeError(f"chaos infra did not come up:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        pool = await asyncpg.create_pool(self.kit.operator_database_url, min_size=1, max_size=2)
        try:
            await seed_demo(pool, ("acme",))
        finally:
            await pool.close()
        record = ControlTenant.build(
            ControlTenantData(tenant_id="acme", settings=DEMO_TENANTS["acme"] | {"budget_usd": 10_000}, set_by="chaos"), source="chaos"
        )
        await publish_control(self.kit, record)
        self.start_tool_service()
        self.start_services()
        await self.wait_ready()

    def start_services(self) -> None:
        """The supervisor and its children (logs in <run>/logs/<copy>.log)."""
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        out = open(self.run_dir / "logs" / "supervisor.log", "ab")  # noqa: SIM115  (the child keeps it)
        self.supervisor = subprocess.Popen(
            [sys.executable, str(HERE / "chaos_supervise.py"), *COPIES], env=self.env(), stdout=out, stderr=subprocess.STDOUT
        )
        out.close()

    def start_tool_service(self) -> None:
        """The warehouse's outside `update_inventory` service (examples/outside_tool_service), logged in as its own principal."""
        out = open(self.root / "inventory.log", "ab")  # noqa: SIM115
        self.tool_service = subprocess.Popen(
            [
                sys.executable,
                str(INVENTORY_SERVICE),
                "--bootstrap",
                self.bootstrap,
                "--prefix",
                self.kit.topic_prefix,
                "--properties",
                str(self.kit.kafka_credentials_dir / "tool-update_inventory.properties"),
                "--db",
                str(self.inventory_db),
                "--keys-dir",
                str(self.kit.keys_dir),
            ],
            env=self.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()

    async def wait_ready(self, timeout_s: float = 240) -> None:
        """Until every copy runs and each service wrote its ready file (and the outside tool its key)."""
        ready = self.run_dir / "ready"
        deadline = time.monotonic() + timeout_s
        while True:
            missing = [n for n in {c.split(".")[0] for c in COPIES} if not (ready / f"{n}.ready").exists()]
            copies = self.service_pids()
            if not missing and len(copies) == len(COPIES) and (self.kit.keys_dir / "tools" / "update_inventory.pub").exists():
                return
            if self.supervisor is not None and self.supervisor.poll() is not None:
                raise RuntimeError(f"the supervisor exited with {self.supervisor.returncode}; see {self.run_dir / 'logs'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"services not ready after {timeout_s}s: {missing}, copies {sorted(copies)}")
            await asyncio.sleep(0.5)

    async def down(self, keep: bool = False) -> None:
        """Stop services, the outside tool and the infrastructure; delete the scratch directory unless `keep`."""
        for proc in (self.supervisor, self.tool_service):
            if proc is not None and proc.poll() is None:
                for pid in self.service_pids().values():  # a paused child would never see SIGTERM
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
                proc.terminate()
                try:
                    await asyncio.to_thread(proc.wait, 60)
                except subprocess.TimeoutExpired:
                    proc.kill()
        await asyncio.to_thread(subprocess.run, ["bash", str(INFRA_SH), "down"], env=self.env(), capture_output=True, timeout=180)
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)

    # ---- what the faults aim at --------------------------------------------------------------

    def service_pids(self) -> dict[str, int]:
        """Running copies by name (`policy.2`, …), found by the marker the supervisor put in their environment."""
        if self.supervisor is None:
            return {}
        out: dict[str, int] = {}
        with contextlib.suppress(OSError):
            pid = self.supervisor.pid
            for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
                with contextlib.suppress(OSError):
                    environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
                    marker = next((e for e in environ if e.startswith(b"TIDEGATE_CHAOS_COPY=")), None)
                    if marker is not None:
                        out[marker.split(b"=", 1)[1].decode()] = int(child)
        return out

    def signal_service(self, copy: str, sig: signal.Signals) -> int:
        """Send `sig` to one copy; its pid."""
        pid = self.service_pids()[copy]
        os.kill(pid, sig)
        return pid

    def broker_pid(self, node: int) -> int:
        """The pid of Kafka node `node` (1-based) of this stack."""
        kafka = self.infra_dir / "kafka"
        return int(((kafka / "kafka.pid") if node == 1 else (kafka / f"node-{node}" / "kafka.pid")).read_text())

    async def kill_broker(self, node: int) -> None:
        """SIGKILL one Kafka node and wait until its port refuses connections.

        Not until its main thread is a zombie: the JVM's other threads, still exiting, hold the listening
        socket, and `infra.sh up` run then found the port taken and refused to start the node.
        """
        pid = self.broker_pid(node)
        os.kill(pid, signal.SIGKILL)
        port, deadline = self.node_port(node), time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
            except TimeoutError:  # an OSError too: no answer is not a refusal
                continue
            except OSError:
                return  # refused: the listener is gone
            writer.close()
            await asyncio.sleep(0.1)
        raise RuntimeError(f"Kafka node {node} (pid {pid}) still accepts connections on 127.0.0.1:{port} 60 s after SIGKILL")

    async def start_brokers(self) -> None:
        """`infra.sh up`: starts every Kafka node that is not running and waits until each answers."""
        done = await asyncio.to_thread(subprocess.run, ["bash", str(INFRA_SH), "up"], env=self.env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"infra.sh up failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")

    async def restart_postgres(self) -> None:
        """`pg_ctl restart -m fast` of this stack's cluster (every connection is cut; the services must reconnect)."""
        data = self.infra_dir / "pg" / "data"
        version = (data / "PG_VERSION").read_text().strip()
        pg_ctl = f"/usr/lib/postgresql/{version}/bin/pg_ctl"
        log = self.infra_dir / "pg" / "logs" / "postgres.log"
        cmd = [pg_ctl, "-D", str(data), "-l", str(log), "-m", "fast", "-w", "-t", "60", "restart"]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        await asyncio.to_thread(subprocess.run, cmd, check=True, capture_output=True, cwd=self.infra_dir / "pg")
