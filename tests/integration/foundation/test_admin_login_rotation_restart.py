"""Admin's Kafka login rotated on a broker of its own, through the restarts between the steps (rotation probe F4).

admin is also each broker's login to the others, written into `server.properties` at each start. The rotation puts the
new password on the other SCRAM mechanism; the restart must bring the broker back ready on it (`infra up` writes the
node's file from `admin.properties` and checks readiness as admin with it); `--finish` then retires the former, and a
broker restarted after that still comes up. Runs a copy of infra/ in a scratch repo on other ports (as
`test_infra_script.py`), so the shared infrastructure is untouched.
"""

from __future__ import annotations

import subprocess

import pytest
from test_infra_script import scratch_infra

from servicekit import ADMIN
from servicekit.bus_auth import read_mechanism, read_password
from servicekit.bus_rotation import finish_rotation, former_file, logs_in, start_rotation

pytestmark = pytest.mark.slow


async def test_admin_rotates_through_a_broker_restart_and_the_broker_comes_back_each_time() -> None:
    with scratch_infra() as (root, env, script):
        subprocess.run([*script, "up"], env=env, check=True, timeout=300)
        bootstrap = f"127.0.0.1:{env['TIDEGATE_KAFKA_PORT']}"
        folder, node = root / ".infra" / "kafka" / "credentials", root / ".infra" / "kafka" / "server.properties"
        former = read_password(folder / f"{ADMIN}.properties")
        assert former is not None

        started = await start_rotation(bootstrap, folder, ADMIN, broker_configs=[node])
        assert (started.new_logs_in, started.former_refused) == (True, False)
        new = read_password(folder / f"{ADMIN}.properties")
        assert new is not None
        assert read_mechanism(folder / f"{ADMIN}.properties") == "SCRAM-SHA-256"

        subprocess.run([*script, "down"], env=env, check=True, timeout=120)
        subprocess.run([*script, "up"], env=env, check=True, timeout=300)  # ready: checked as admin with the new login
        text = node.read_text()
        assert "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-256" in text
        assert f'password="{new}"' in text
        assert f'password="{former}"' not in text

        finished = await finish_rotation(bootstrap, folder, ADMIN, broker_configs=[node])
        assert (finished.new_logs_in, finished.former_refused) == (True, True)
        assert not former_file(folder, ADMIN).exists()

        subprocess.run([*script, "down"], env=env, check=True, timeout=120)
        subprocess.run([*script, "up"], env=env, check=True, timeout=300)  # the retired credential locks nothing out
        assert await logs_in(bootstrap, ADMIN, "SCRAM-SHA-256", new)
        assert not await logs_in(bootstrap, ADMIN, "SCRAM-SHA-512", former)
