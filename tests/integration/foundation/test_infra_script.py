"""`infra up` twice, then `infra down`, leaves none of its processes running; `up` generates the database logins and rotates old ones;
`up` waits for a port a killed process still holds, and refuses one that stays taken.

Runs a copy of infra/ in a scratch repo on other ports, so the shared infrastructure is untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ports import free_port

from servicekit import REPO_ROOT

pytestmark = pytest.mark.slow


def scratch_env() -> dict[str, str]:
    """This shell's environment on free ports, without a `TIDEGATE_INFRA_DIR` that would aim the script at another stack."""
    env = {k: v for k, v in os.environ.items() if k not in ("TIDEGATE_INFRA_DIR", "TIDEGATE_KAFKA_BROKERS")}
    ports = ("TIDEGATE_KAFKA_PORT", "TIDEGATE_KAFKA_CONTROLLER_PORT", "TIDEGATE_PG_PORT")
    return env | {name: str(free_port()) for name in ports}


@contextlib.contextmanager
def scratch_infra() -> Iterator[tuple[Path, dict[str, str], list[str]]]:
    """A copy of infra/ in a scratch repo on free ports: (the repo, its environment, the script to run); `down`, then deleted.

    Not pytest's tmp_path: every pytest session resets /tmp/pytest-of-<user> to 0700, and the `postgres` user must reach
    its data directory for as long as the test runs (a session started meanwhile broke `down` once).
    """
    scratch = Path(tempfile.mkdtemp(prefix="tidegate-infra-test-"))
    os.chmod(scratch, 0o755)
    root = scratch / "repo"
    shutil.copytree(REPO_ROOT / "infra", root / "infra")
    env = scratch_env()
    script = ["bash", str(root / "infra" / "infra.sh")]
    try:
        yield root, env, script
    finally:
        subprocess.run([*script, "down"], env=env, timeout=120)
        shutil.rmtree(scratch, ignore_errors=True)


def ours(root: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", str(root / ".infra")], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def test_up_twice_then_down_leaves_nothing_running() -> None:
    with scratch_infra() as (root, env, script):
        subprocess.run([*script, "up"], env=env, check=True, timeout=240)
        assert ours(root), "nothing started"
        subprocess.run([*script, "up"], env=env, check=True, timeout=120)
        status = subprocess.run([*script, "status"], env=env, capture_output=True, text=True, timeout=60)
        assert status.returncode == 0
        assert env["TIDEGATE_KAFKA_PORT"] in status.stdout
        assert "log" in status.stdout
        subprocess.run([*script, "down"], env=env, check=True, timeout=120)
        assert ours(root) == []
        assert subprocess.run([*script, "status"], env=env, capture_output=True, timeout=60).returncode == 3


# The logins a cluster made by an older infra.sh has: the committed development passwords, for the operator and the superuser.
OLD_LOGINS = {"tidegate": "tide" + "gate", "postgres": "post" + "gres"}


def logs_in(port: str, user: str, *, password: str | None = None, passfile: Path | None = None) -> bool:
    """Whether `user` logs in over TCP (127.0.0.1) with that password or passfile, as a plain psql client would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env |= (
        {"PGCONNECT_TIMEOUT": "10"} | ({"PGPASSWORD": password} if password else {}) | ({"PGPASSFILE": str(passfile)} if passfile else {})
    )
    args = ["psql", "-X", "-w", "-h", "127.0.0.1", "-p", port, "-U", user, "-d", "postgres", "-Atc", "SELECT current_user"]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=30).stdout.strip() == user


def statement_texts(superuser: list[str]) -> str:
    """Every statement text `pg_stat_statements` keeps (the cluster preloads it), as a monitoring role reads them."""
    subprocess.run([*superuser, "-c", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"], check=True, timeout=30)
    return subprocess.run([*superuser, "-Atc", "SELECT query FROM pg_stat_statements"], check=True, capture_output=True, text=True).stdout


def test_up_generates_the_database_logins_and_rotates_an_older_clusters() -> None:
    with scratch_infra() as (root, env, script):
        port = env["TIDEGATE_PG_PORT"]
        pg = root / ".infra" / "pg"
        passfile = pg / "credentials" / "tidegate.pgpass"
        superuser = ["psql", "-X", "-q", "-h", str(pg / "run"), "-p", port, "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1"]
        subprocess.run([*script, "up"], env=env, check=True, timeout=240)
        assert stat.S_IMODE(passfile.stat().st_mode) == 0o600
        assert stat.S_IMODE(passfile.parent.stat().st_mode) == 0o700
        assert logs_in(port, "tidegate", passfile=passfile)
        assert not any(logs_in(port, user, password=password) for user, password in OLD_LOGINS.items())
        first = passfile.read_text()
        # psql's \password sent the server a SCRAM verifier: the password is in no statement the server keeps.
        assert first.split(":")[-1].strip() not in statement_texts(superuser)

        # Make it a cluster of an older infra.sh: the committed passwords, password logins on the socket, no passfile.
        for user, password in OLD_LOGINS.items():
            subprocess.run([*superuser, "-c", f"ALTER ROLE {user} PASSWORD '{password}'"], check=True, timeout=30)
        (pg / "data" / "pg_hba.conf").write_text("local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n")
        subprocess.run([*superuser, "-c", "SELECT pg_reload_conf()"], check=True, timeout=30)
        passfile.unlink()
        assert all(logs_in(port, user, password=password) for user, password in OLD_LOGINS.items()), "not an older cluster"

        subprocess.run([*script, "up"], env=env, check=True, timeout=240)
        assert not any(logs_in(port, user, password=password) for user, password in OLD_LOGINS.items())
        assert logs_in(port, "tidegate", passfile=passfile)
        assert passfile.read_text() != first, "the operator's password was not generated anew"
        assert passfile.read_text().split(":")[-1].strip() not in statement_texts(superuser)


def hold_port(port: str, seconds: float | None) -> subprocess.Popen[bytes]:
    """Another process listening on 127.0.0.1:PORT, for `seconds` (None: until killed), as a broker killed a moment ago still does."""
    hold = f"import time; time.sleep({seconds})" if seconds is not None else "import time; time.sleep(3600)"
    code = f"import socket; s = socket.create_server(('127.0.0.1', {port})); {hold}"
    holder = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", int(port))) == 0:
                return holder
        time.sleep(0.05)
    holder.kill()
    raise RuntimeError(f"the holder never listened on 127.0.0.1:{port}")


def test_up_waits_for_a_port_being_let_go_and_refuses_one_that_stays_taken() -> None:
    with scratch_infra() as (root, base_env, script):
        env = base_env | {"TIDEGATE_PORT_FREE_TIMEOUT": "2"}
        port = env["TIDEGATE_KAFKA_PORT"]
        holder = hold_port(port, None)
        try:
            refused = subprocess.run([*script, "up"], env=env, capture_output=True, text=True, timeout=240)
            assert refused.returncode != 0
            assert f"127.0.0.1:{port} is taken by another process (set TIDEGATE_KAFKA_PORT)" in refused.stderr
            assert ours(root) == [], "up started something though it refused"
            garbled_env = env | {"TIDEGATE_PORT_FREE_TIMEOUT": "2s"}
            garbled = subprocess.run([*script, "up"], env=garbled_env, capture_output=True, text=True, timeout=240)
            assert garbled.returncode != 0
            assert "TIDEGATE_PORT_FREE_TIMEOUT must be a whole number of seconds (got '2s')" in garbled.stderr
            holder.kill()
            holder.wait()

            # Held for 3 s, longer than a bare check takes, within a 20 s wait: up waits and then starts the broker there.
            holder = hold_port(port, 3)
            patient = env | {"TIDEGATE_PORT_FREE_TIMEOUT": "20"}
            waited = subprocess.run([*script, "up"], env=patient, capture_output=True, text=True, timeout=240)
            assert waited.returncode == 0, waited.stderr[-2000:]
            assert f"127.0.0.1:{port} let go after" in waited.stdout
            assert holder.poll() is not None
            status = subprocess.run([*script, "status"], env=env, capture_output=True, text=True, timeout=60)
            assert status.returncode == 0
            assert port in status.stdout
        finally:
            holder.kill()


def test_a_port_in_the_ephemeral_range_is_named_as_the_likely_cause() -> None:
    """platform5: a service reconnecting to a stopped broker on 59092 connected to itself and held the port; `up` failed
    five times with the JVM's 'Address already in use'. `up` now says the port is in the ephemeral range, and why that bites."""
    with socket.socket() as pick:
        pick.bind(("127.0.0.1", 0))  # the kernel picks from its ephemeral range
        ephemeral = str(pick.getsockname()[1])
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    with scratch_infra() as (root, base_env, script):
        env = base_env | {"TIDEGATE_PORT_FREE_TIMEOUT": "1", "TIDEGATE_KAFKA_PORT": ephemeral}
        holder = hold_port(ephemeral, None)
        try:
            refused = subprocess.run([*script, "up"], env=env, capture_output=True, text=True, timeout=240)
        finally:
            holder.kill()
        said = refused.stdout + refused.stderr
        assert refused.returncode != 0
        assert f"127.0.0.1:{ephemeral} is in this machine's ephemeral port range ({low}-{high})" in said
        assert f"it is in the ephemeral range {low}-{high}: a client's own connection may hold it" in refused.stderr
        assert ours(root) == []
