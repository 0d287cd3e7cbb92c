"""The chaos suite's short run, part of `make test`: a SIGKILLed executor and a PostgreSQL restart under load lose nothing.

It starts its own Kafka and PostgreSQL (other ports, a scratch directory), the services with two
copies of policy and executor, the outside inventory service and a scripted approver, sends tasks
and outside proposals open loop, injects the two faults, and checks what `make test-chaos` checks
after every fault (tests/chaos/chaos_run.py; docs/reliability.md).
"""

from __future__ import annotations

import random

import pytest
from chaos_run import SHORT, run

pytestmark = [pytest.mark.slow, pytest.mark.chaos]


@pytest.mark.timeout(1500)
async def test_a_killed_executor_and_a_postgres_restart_under_load_lose_nothing_and_run_nothing_twice() -> None:
    seed = random.randrange(10**6)
    report = await run(brokers=1, faults=SHORT, rate=2.0, gap_s=20.0, settle_s=360.0, seed=seed, keep=False)
    print(f"chaos short run (seed {seed}):\n{report.render()}")
    assert not report.failures, report.render()
    assert report.counts["service restarts by the supervisor"] >= 1  # the kill did happen
